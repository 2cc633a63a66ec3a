//! Client commands (`proto-schemas/ws-client.schema.json`), parsed or refused with a reason.

use serde::Deserialize;
use serde_json::Value;

/// A client command.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Command {
    Auth {
        #[allow(dead_code)]
        id: Option<Value>,
        token: String,
    },
    Subscribe {
        #[allow(dead_code)]
        id: Option<Value>,
        channels: Option<Vec<String>>,
        types: Option<Vec<String>>,
        ids: Option<Vec<String>>,
        notifications: Option<bool>,
        cursor: Option<String>,
    },
    Unsubscribe {
        #[allow(dead_code)]
        id: Option<Value>,
        channels: Vec<String>,
    },
    MarkRead {
        #[allow(dead_code)]
        id: Option<Value>,
        notification_id: String,
    },
    MarkAllRead {
        #[allow(dead_code)]
        id: Option<Value>,
    },
    Ping {
        #[allow(dead_code)]
        id: Option<Value>,
    },
}

/// The command's `id` (even when the rest is wrong, so the error can name it) and the command.
pub(crate) fn parse(text: &str) -> (Option<Value>, Result<Command, String>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return (None, Err(format!("not JSON: {e}"))),
    };
    let id = value.get("id").cloned();
    let cmd = serde_json::from_value(value)
        .map_err(|e| format!("{e} (ops: auth, subscribe, unsubscribe, mark_read, mark_all_read, ping)"));
    (id, cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_parse_or_say_why() {
        let (id, c) = parse(r#"{"op":"subscribe","id":7,"channels":["orders"],"cursor":"x"}"#);
        assert_eq!(id, Some(json!(7)));
        assert!(matches!(c, Ok(Command::Subscribe { .. })));
        let (id, c) = parse(r#"{"op":"fly","id":"a"}"#);
        assert_eq!(id, Some(json!("a")));
        assert!(c.unwrap_err().contains("ops:"));
        let (_, c) = parse(r#"{"op":"mark_read","id":1}"#);
        assert!(c.unwrap_err().contains("notification_id"));
        let (id, c) = parse("{not json");
        assert!(id.is_none() && c.unwrap_err().starts_with("not JSON"));
        let (_, c) = parse(r#"{"op":"ping","id":1,"extra":true}"#);
        assert!(c.is_err(), "unknown fields are refused");
    }
}
