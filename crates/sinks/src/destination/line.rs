//! LINE Messaging API push: `POST https://api.line.me/v2/bot/message/push` with the channel
//! access token (`Authorization: Bearer`) and `X-Line-Retry-Key`, a UUID fixed per (event,
//! destination): a retry after a lost answer is answered 409 with `X-Line-Accepted-Request-Id`,
//! which means "already accepted", a success. (LINE Notify was shut down in March 2025.)

use serde_json::json;

use super::{classify, json_request, Answer, Kind, Message, Outcome, Wire};
use crate::secret::Secret;

/// LINE's push endpoint.
pub const PUSH_URL: &str = "https://api.line.me/v2/bot/message/push";
/// LINE's limit on a text message, in characters.
const MAX_TEXT: usize = 5000;

/// A LINE push destination: a user, group or room id to push to.
#[derive(Debug)]
pub struct Line {
    /// The channel access token.
    pub token: Secret,
    /// The user, group or room id (`U...`, `C...`, `R...`).
    pub to: String,
    /// The endpoint (`PUSH_URL`; a test's own stand-in otherwise).
    pub url: String,
}

impl Kind for Line {
    fn kind(&self) -> &'static str {
        "line"
    }

    fn request(&self, m: &Message) -> Result<Wire, String> {
        let text: String = m.text.chars().take(MAX_TEXT).collect();
        let body = json!({"to": self.to, "messages": [{"type": "text", "text": text}]});
        let headers = vec![
            ("authorization".to_owned(), format!("Bearer {}", self.token.value()?)),
            ("x-line-retry-key".to_owned(), m.key.to_string()),
        ];
        Ok(Wire::Http(json_request(self.url.clone(), &body, headers)))
    }

    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        match a.status {
            // The retry key was seen: the first request was accepted.
            409 if a.header("x-line-accepted-request-id").is_some() => Outcome::Accepted { pause: None },
            _ => classify(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::samples::*;

    #[test]
    fn the_retry_key_is_the_event_destination_key_and_409_is_success() {
        let l = Line {
            token: Secret::literal("tok"),
            to: "U4af4980629".into(),
            url: PUSH_URL.into(),
        };
        let m = message();
        let r = l.request(&m).unwrap().http();
        assert_eq!(r.url, PUSH_URL);
        let header = |n: &str| r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(header("x-line-retry-key"), Some(m.key.to_string()));
        assert_eq!(header("authorization").as_deref(), Some("Bearer tok"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["to"], "U4af4980629");
        assert_eq!(body["messages"][0]["text"], m.text);
        let accepted = h("x-line-accepted-request-id", "abc");
        assert_eq!(
            l.outcome(&answer(409, &accepted, b"")),
            Outcome::Accepted { pause: None }
        );
        assert!(
            matches!(l.outcome(&answer(409, &[], b"")), Outcome::DeadLetter(_)),
            "a 409 without the header is a conflict"
        );
    }
}
