//! The project's own per-user notifications (the bell, with unread state on every device) as a
//! destination: `POST <gateway>/api/notifications` with a service key (`X-Service-Key`) and the
//! (event, destination) key as `idempotency_key`, so a resent delivery is answered 200 with the
//! first notification instead of adding a second.

use serde_json::json;

use super::{classify, json_request, Answer, Kind, Message, Outcome, Wire};
use crate::secret::Secret;

/// A user's inbox on a gateway.
#[derive(Debug)]
pub struct Inbox {
    /// The gateway's base URL.
    pub url: String,
    /// A service key of the gateway (`auth.service_keys.<name>`).
    pub service_key: Secret,
    /// Whose bell.
    pub user_id: String,
    /// `info`, `warning`, `error` or `success`.
    pub level: String,
}

impl Kind for Inbox {
    fn kind(&self) -> &'static str {
        "inbox"
    }

    fn request(&self, m: &Message) -> Result<Wire, String> {
        let title: String = m.text.chars().take(200).collect();
        let body = json!({
            "user_id": self.user_id,
            "type": self.level,
            "title": title,
            "message": m.text.chars().take(4000).collect::<String>(),
            "idempotency_key": m.key.to_string(),
        });
        let url = format!("{}/api/notifications", self.url.trim_end_matches('/'));
        Ok(Wire::Http(json_request(
            url,
            &body,
            vec![("x-service-key".to_owned(), self.service_key.value()?)],
        )))
    }

    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        match a.status {
            // notifications_disabled: the gateway has none; nothing a retry changes.
            404 => Outcome::Disable("HTTP 404: the gateway's notifications are off".into()),
            _ => classify(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::samples::*;

    #[test]
    fn a_notification_with_the_key_as_its_idempotency_key() {
        let i = Inbox {
            url: "http://127.0.0.1:9/".into(),
            service_key: Secret::literal("k"),
            user_id: "ops".into(),
            level: "warning".into(),
        };
        let m = message();
        let r = i.request(&m).unwrap().http();
        assert_eq!(r.url, "http://127.0.0.1:9/api/notifications");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["idempotency_key"], m.key.to_string());
        assert_eq!(
            (body["user_id"].as_str(), body["type"].as_str()),
            (Some("ops"), Some("warning"))
        );
        assert!(matches!(i.outcome(&answer(201, &[], b"{}")), Outcome::Accepted { .. }));
        assert!(
            matches!(i.outcome(&answer(200, &[], b"{}")), Outcome::Accepted { .. }),
            "the key was used: the first one"
        );
        assert!(matches!(i.outcome(&answer(404, &[], b"")), Outcome::Disable(_)));
    }
}
