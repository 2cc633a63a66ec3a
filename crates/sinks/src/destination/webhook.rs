//! A generic HTTPS webhook signed per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com>): `webhook-id` (the (event, destination) key, the same on
//! every retry, so a receiver drops what it has seen), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, one signature per
//! configured secret (`whsec_<base64 key>`), space-separated, so a key can be rotated. The body
//! is `{type, timestamp, data: <the envelope>, text, count}`. 410 Gone disables the endpoint.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{classify, json_request, Answer, Kind, Message, Outcome, Wire};
use crate::secret::Secret;

/// A signed webhook endpoint.
#[derive(Debug)]
pub struct Webhook {
    /// The endpoint (HTTPS, or HTTP to a loopback address).
    pub url: String,
    /// Signing secrets, `whsec_<base64>`: the first is current, the others still accepted.
    pub secrets: Vec<Secret>,
}

/// The key bytes of a `whsec_` secret.
pub fn key_of(secret: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| "a webhook secret is whsec_<base64>".to_owned())
}

/// `v1,<base64 signature>` of `id.timestamp.body` under `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

impl Kind for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn request(&self, m: &Message) -> Result<Wire, String> {
        let id = format!("msg_{}", m.key.simple());
        let body = json!({
            "type": m.event.event_type,
            "timestamp": m.event.timestamp,
            "data": m.event,
            "text": m.text,
            "count": m.count,
        });
        let bytes = body.to_string().into_bytes();
        let mut signatures = Vec::with_capacity(self.secrets.len());
        for s in &self.secrets {
            signatures.push(sign(&key_of(&s.value()?)?, &id, m.sent_at, &bytes));
        }
        let headers = vec![
            ("webhook-id".to_owned(), id),
            ("webhook-timestamp".to_owned(), m.sent_at.to_string()),
            ("webhook-signature".to_owned(), signatures.join(" ")),
        ];
        let mut r = json_request(self.url.clone(), &body, headers);
        r.body = bytes;
        Ok(Wire::Http(r))
    }

    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        match a.status {
            410 => Outcome::Disable("HTTP 410: the endpoint is gone".into()),
            _ => classify(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::samples::*;

    /// The Standard Webhooks specification's own example (its test vectors).
    #[test]
    fn the_specification_example_signs_as_it_says() {
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn every_secret_signs_the_same_id_on_every_retry() {
        let w = Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            secrets: vec![
                Secret::literal("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                Secret::literal("whsec_AAAA"),
            ],
        };
        let m = message();
        let (a, b) = (w.request(&m).unwrap().http(), w.request(&m).unwrap().http());
        let header = |r: &crate::destination::Request, n: &str| {
            r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap()
        };
        assert_eq!(header(&a, "webhook-id"), header(&b, "webhook-id"));
        let sigs = header(&a, "webhook-signature");
        assert_eq!(sigs.split(' ').count(), 2);
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(sigs.starts_with(&sign(&key, &header(&a, "webhook-id"), m.sent_at, &a.body)));
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(body["data"]["payload"]["id"], "ord_81");
        assert!(matches!(w.outcome(&answer(410, &[], b"")), Outcome::Disable(_)));
        assert!(Webhook {
            url: String::new(),
            secrets: vec![Secret::literal("whsec_!!")]
        }
        .request(&m)
        .is_err());
    }
}
