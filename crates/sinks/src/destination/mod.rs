//! Destinations, one file per kind (Slack, Discord, LINE push, Standard Webhooks, the inbox,
//! email, Web Push): the HTTP request (or mail) a message becomes (the provider's real
//! format, with the (event, destination) idempotency key where the provider takes one), and what
//! the provider's answer means ([`Outcome`]). Nothing here does I/O: the delivery loop sends
//! the [`Request`] and hands back the [`Answer`].
//!
//! # Adding a kind
//! A file with a type implementing [`Kind`], a variant of [`crate::config::DestinationConfig`]
//! (`config/destinations.rs`), and its row in the reference (`docs/architecture.md`, "Adding a
//! destination kind"). [`classify`] is the common reading of a status; a kind
//! overrides what its provider documents differently.

pub mod discord;
pub mod email;
pub mod inbox;
pub mod line;
pub mod slack;
pub mod web_push;
pub mod webhook;
pub mod wire;

pub use wire::{Request, Wire};

use std::time::Duration;

use event_bus::Envelope;

/// What one delivery says: the text, the event (or the last of a digest), its idempotency key,
/// and when it is sent (Unix seconds: Standard Webhooks signs it).
#[derive(Clone, Debug)]
pub struct Message {
    /// The rendered message.
    pub text: String,
    /// The event, or a digest's last event.
    pub event: Envelope,
    /// How many events it stands for (1, or a digest's count).
    pub count: usize,
    /// The (event, destination) idempotency key.
    pub key: uuid::Uuid,
    /// Now, in Unix seconds.
    pub sent_at: i64,
}

impl Message {
    /// The message an outbox entry's fields hold (`text`, `count`, `key`, `event`), to be sent
    /// now; the error says what is missing or wrong.
    pub fn of_entry(fields: &std::collections::HashMap<String, String>) -> Result<Message, String> {
        let f = |k: &str| fields.get(k).cloned().ok_or_else(|| format!("the entry has no {k}"));
        let event: Envelope = serde_json::from_str(&f("event")?).map_err(|e| format!("its event: {e}"))?;
        Ok(Message {
            text: f("text")?,
            count: f("count")?.parse().unwrap_or(1),
            key: f("key")?.parse().map_err(|_| "its key is not a UUID".to_owned())?,
            event,
            sent_at: (event_bus::Timestamp::now_ms() / 1000) as i64,
        })
    }
}

/// A provider's answer.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    /// The status code.
    pub status: u16,
    /// Headers, names in lowercase.
    pub headers: &'a [(String, String)],
    /// The body (at most what the delivery loop read of it).
    pub body: &'a [u8],
}

impl Answer<'_> {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in seconds (the delta form; an HTTP date is not honoured, backoff applies).
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)))
    }
}

/// What an answer means for the delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Taken (also "already taken": a retried request the provider recognised). `pause`: the
    /// provider asks for no next request to this destination before it.
    Accepted {
        /// No request before this much time has passed.
        pause: Option<Duration>,
    },
    /// Try again later: not before `after` when the provider said so, else by backoff.
    Retry {
        /// The provider's hint.
        after: Option<Duration>,
        /// Why, for the log and the dead letter.
        why: String,
    },
    /// The destination is gone or refuses this configuration: stop sending to it.
    Disable(String),
    /// This message will never be taken: put it aside (dead letters), go on with the next.
    DeadLetter(String),
    /// The recipient (a Web Push subscription) is gone: delete it; nothing more to send it.
    Unsubscribed(String),
}

/// The common reading: 2xx taken; 408, 425, 429 and 5xx again later (honouring `Retry-After`);
/// 401 and 403 disable (credentials a retry cannot fix); other 4xx dead-letter.
pub fn classify(a: &Answer<'_>) -> Outcome {
    let why = || {
        format!(
            "HTTP {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
        )
    };
    match a.status {
        200..=299 => Outcome::Accepted { pause: None },
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            after: a.retry_after(),
            why: why(),
        },
        401 | 403 => Outcome::Disable(why()),
        _ => Outcome::DeadLetter(why()),
    }
}

/// A destination kind.
pub trait Kind: Send + Sync + std::fmt::Debug {
    /// The kind's name (`slack`, `discord`, `line`, `webhook`, `inbox`, `email`, `web_push`).
    fn kind(&self) -> &'static str;
    /// What delivers `m`: an HTTP request, or a mail.
    fn request(&self, m: &Message) -> Result<Wire, String>;
    /// Whose Web Push subscriptions a message goes to: `Some` makes the delivery loop send one
    /// request per subscription ([`Kind::request_to`]) instead of one ([`Kind::request`]).
    fn subscribers(&self) -> Option<&[String]> {
        None
    }
    /// What delivers `m` to subscription `to` (kinds with [`Kind::subscribers`]).
    fn request_to(&self, m: &Message, to: &notifications::push::Subscription) -> Result<Wire, String> {
        let _ = to;
        self.request(m)
    }
    /// What `a` means.
    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        classify(a)
    }
    /// Whether `a` counts against the destination's invalid-request budget
    /// (`delivery.invalid_budget`): 401, 403 and 429, which providers that ban (Discord) count.
    fn counts_as_invalid(&self, a: &Answer<'_>) -> bool {
        matches!(a.status, 401 | 403 | 429)
    }
}

/// The JSON body and its content type header.
pub(crate) fn json_request(url: String, body: &serde_json::Value, extra: Vec<(String, String)>) -> Request {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend(extra);
    Request {
        method: "POST",
        url,
        headers,
        body: body.to_string().into_bytes(),
    }
}

#[cfg(test)]
pub(crate) mod samples {
    use super::*;
    use event_bus::{Action, Channel, EventId, EventType, Payload, Timestamp};
    use serde_json::json;

    /// A message about an order.
    pub fn message() -> Message {
        Message {
            text: "New order ord_81 on ebay: 129.5 USD".into(),
            event: Envelope {
                id: EventId::new(1_732_330_000_123, 0),
                event_type: EventType::ORDER_RECEIVED,
                channel: Channel::ORDERS,
                payload: Payload::new("ord_81", Action::Created).with_data(json!({"marketplace": "ebay"})),
                timestamp: Timestamp::now(),
                traceparent: None,
            },
            count: 1,
            key: crate::key::of(&Channel::ORDERS, EventId::new(1_732_330_000_123, 0), "d"),
            sent_at: 1_732_330_001,
        }
    }

    /// An answer with a status, headers and body.
    pub fn answer<'a>(status: u16, headers: &'a [(String, String)], body: &'a [u8]) -> Answer<'a> {
        Answer { status, headers, body }
    }

    /// One header.
    pub fn h(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.to_owned(), v.to_owned())]
    }
}

#[cfg(test)]
mod tests {
    use super::{samples::*, *};

    #[test]
    fn the_common_reading_of_a_status() {
        assert_eq!(classify(&answer(204, &[], b"")), Outcome::Accepted { pause: None });
        let hint = h("retry-after", "7");
        assert!(
            matches!(classify(&answer(429, &hint, b"")), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert!(matches!(
            classify(&answer(503, &[], b"")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(classify(&answer(403, &[], b"")), Outcome::Disable(_)));
        assert!(matches!(classify(&answer(400, &[], b"bad")), Outcome::DeadLetter(w) if w.contains("bad")));
        let nonsense = h("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT");
        assert!(matches!(
            classify(&answer(429, &nonsense, b"")),
            Outcome::Retry { after: None, .. }
        ));
    }

    #[test]
    fn a_request_never_prints_its_url_or_credentials() {
        let r = json_request(
            "https://hooks.slack.com/services/T/B/secret".into(),
            &serde_json::json!({}),
            h("authorization", "Bearer tok"),
        );
        let printed = format!("{r:?}");
        assert!(!printed.contains("secret") && !printed.contains("tok"), "{printed}");
    }
}
