//! Web Push (RFC 8030) to the browsers of chosen users that subscribed on the gateway
//! (`/api/push/subscriptions`): one request per subscription, its payload encrypted to the
//! browser's keys (RFC 8291, `aes128gcm`, by the maintained `web-push-native` crate) and signed
//! with the deployment's VAPID key (RFC 8292: an ES256 JWT by `p256`'s ECDSA). `TTL` and `Urgency` from the configuration;
//! `Topic` from the event's type and entity, so a newer stock-out of the same product replaces
//! one the push service still holds (a resent message replaces itself too). A 404 or 410 means
//! the subscription is gone: it is deleted. So is one answered 401 or 403: push services answer
//! so for a subscription made with another `applicationServerKey` (another deployment's, or the
//! one before a VAPID key rotation), which this key can never reach; the browser subscribes
//! again with the current key. One such subscription never stops the others. Endpoints are taken only at the push services the
//! configuration allows (checked again here, as the gateway did when storing them).

use base64::Engine as _;
use notifications::push::Subscription;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use sha2::{Digest, Sha256};
use web_push_native::{Auth, WebPushBuilder};

use super::{classify, Answer, Kind, Message, Outcome, Request, Wire};
use crate::secret::Secret;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// How long a VAPID signature is valid (RFC 8292 allows at most 24 h).
const VAPID_VALIDITY: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// A Web Push destination.
#[derive(Debug)]
pub struct WebPush {
    /// Whose subscriptions.
    pub users: Vec<String>,
    /// The VAPID private key (base64url, 32 bytes).
    pub vapid_private_key: Secret,
    /// Who runs this sender (`mailto:` or `https:`), for the push services.
    pub contact: String,
    /// How long a push service keeps an undelivered message, in seconds.
    pub ttl_secs: u64,
    /// `very-low`, `low`, `normal` or `high`.
    pub urgency: String,
    /// Push services an endpoint may be at.
    pub allowed_hosts: Vec<String>,
}

/// The VAPID key of a private key (base64url of its 32 bytes).
pub fn key_pair(private: &str) -> Result<SigningKey, String> {
    let bytes = B64
        .decode(private.trim().trim_end_matches('='))
        .map_err(|_| "not base64url".to_owned())?;
    SigningKey::from_slice(&bytes).map_err(|_| "not a P-256 private key (32 bytes)".to_owned())
}

/// The public key of a pair, base64url of its uncompressed point (the gateway's
/// `notifications.push.public_key`).
pub fn public_key(pair: &SigningKey) -> String {
    B64.encode(pair.verifying_key().to_encoded_point(false).as_bytes())
}

/// A new key pair: (private, public), base64url.
pub fn new_keys() -> (String, String) {
    let pair = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    (B64.encode(pair.to_bytes()), public_key(&pair))
}

/// The VAPID `Authorization` (RFC 8292): `vapid t=<JWT>, k=<public key>`, the JWT ES256-signed
/// for the endpoint's origin (`aud`, with its port when it has one), from `contact` (`sub`),
/// valid for [`VAPID_VALIDITY`].
pub fn vapid(endpoint: &http::Uri, contact: &str, key: &SigningKey, now_secs: u64) -> Result<String, String> {
    let origin = match (endpoint.scheme_str(), endpoint.authority()) {
        (Some(scheme), Some(authority)) => {
            format!("{scheme}://{}", authority.as_str().rsplit('@').next().unwrap_or(""))
        }
        _ => return Err("endpoint: no origin".into()),
    };
    let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
    let claims = serde_json::json!({"aud": origin, "exp": now_secs + VAPID_VALIDITY.as_secs(), "sub": contact});
    let signed = format!("{header}.{}", B64.encode(claims.to_string()));
    let signature: Signature = key.sign(signed.as_bytes());
    Ok(format!(
        "vapid t={signed}.{}, k={}",
        B64.encode(signature.to_bytes()),
        public_key(key)
    ))
}

/// The `Topic` of a message: one per (event type, entity), a digest's one per type; 22
/// base64url characters (RFC 8030 allows 32).
pub fn topic(m: &Message) -> String {
    let e = &m.event;
    let seed = if m.count > 1 {
        format!("digest\u{0}{}", e.event_type)
    } else {
        format!("{}\u{0}{}", e.event_type, e.payload.id)
    };
    B64.encode(&Sha256::digest(seed.as_bytes())[..16])
}

impl WebPush {
    /// What the browser's service worker gets: a notification to show.
    fn payload(&self, m: &Message, topic: &str) -> Vec<u8> {
        let e = &m.event;
        let title: String = m.text.lines().next().unwrap_or_default().chars().take(100).collect();
        serde_json::json!({
            "title": title,
            "body": m.text.chars().take(1000).collect::<String>(),
            "tag": topic,
            "count": m.count,
            "data": {"channel": e.channel, "id": e.id, "type": e.event_type, "entity": e.payload.id, "key": m.key.to_string()},
        })
        .to_string()
        .into_bytes()
    }
}

impl Kind for WebPush {
    fn kind(&self) -> &'static str {
        "web_push"
    }

    fn subscribers(&self) -> Option<&[String]> {
        Some(&self.users)
    }

    fn request(&self, _m: &Message) -> Result<Wire, String> {
        Err("a web_push message goes to each subscription (request_to)".into())
    }

    fn request_to(&self, m: &Message, to: &Subscription) -> Result<Wire, String> {
        notifications::push::host_allowed(&to.endpoint, &self.allowed_hosts)?;
        let endpoint: http::Uri = to.endpoint.parse().map_err(|_| "endpoint: not a URI".to_owned())?;
        let ua = B64.decode(&to.p256dh).map_err(|_| "p256dh: not base64url".to_owned())?;
        let ua = p256::PublicKey::from_sec1_bytes(&ua).map_err(|_| "p256dh: not a P-256 point".to_owned())?;
        let auth = B64.decode(&to.auth).map_err(|_| "auth: not base64url".to_owned())?;
        if auth.len() != 16 {
            return Err("auth: not 16 bytes".into());
        }
        let pair = key_pair(&self.vapid_private_key.value()?).map_err(|e| format!("vapid_private_key: {e}"))?;
        let topic = topic(m);
        let authorization = vapid(&endpoint, &self.contact, &pair, m.sent_at.max(0) as u64)?;
        let built = WebPushBuilder::new(endpoint, ua, Auth::clone_from_slice(&auth))
            .build(self.payload(m, &topic))
            .map_err(|e| format!("encrypting: {e}"))?;
        let mut headers: Vec<(String, String)> = built
            .headers()
            .iter()
            // The builder's TTL is its default; the configured one goes instead.
            .filter(|(k, _)| k.as_str() != "ttl" && k.as_str() != "content-length")
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        headers.push(("authorization".into(), authorization));
        headers.push(("ttl".into(), self.ttl_secs.to_string()));
        headers.push(("urgency".into(), self.urgency.clone()));
        headers.push(("topic".into(), topic));
        Ok(Wire::Http(Request {
            method: "POST",
            url: to.endpoint.clone(),
            headers,
            body: built.into_body(),
        }))
    }

    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        match a.status {
            404 | 410 => Outcome::Unsubscribed(format!("HTTP {}: the subscription is gone", a.status)),
            401 | 403 => Outcome::Unsubscribed(format!(
                "HTTP {}: the push service refuses this key for the subscription (made with another applicationServerKey)",
                a.status
            )),
            _ => classify(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::samples::*;

    #[test]
    fn encrypted_to_the_browser_and_signed_for_the_push_service() {
        let (private, public) = new_keys();
        assert_eq!(public_key(&key_pair(&private).unwrap()), public);
        let browser = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let auth = [7u8; 16];
        let sub = notifications::push::Subscription {
            id: "s1".into(),
            endpoint: "https://fcm.googleapis.com/fcm/send/abc".into(),
            p256dh: B64.encode(
                p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&browser.public_key(), false).as_bytes(),
            ),
            auth: B64.encode(auth),
            created_at: 0,
        };
        let w = WebPush {
            users: vec!["ops".into()],
            vapid_private_key: Secret::literal(&private),
            contact: "mailto:ops@example.com".into(),
            ttl_secs: 600,
            urgency: "high".into(),
            allowed_hosts: vec!["fcm.googleapis.com".into()],
        };
        let m = message();
        let r = w.request_to(&m, &sub).unwrap().http();
        let h = |n: &str| r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!((h("ttl"), h("urgency")), (Some("600"), Some("high")));
        assert_eq!(h("content-encoding"), Some("aes128gcm"));
        assert_eq!(h("topic").map(str::len), Some(22));
        assert!(h("authorization").unwrap().starts_with("vapid t="));
        let plain = web_push_native::decrypt(r.body.clone(), &browser, Auth::from_slice(&auth)).unwrap();
        let shown: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(shown["title"], m.text);
        assert_eq!(shown["data"]["entity"], "ord_81");
        let elsewhere = Subscription {
            endpoint: "https://evil.example/x".into(),
            ..sub
        };
        assert!(w.request_to(&m, &elsewhere).is_err(), "only allowed push services");
        assert!(matches!(w.outcome(&answer(410, &[], b"")), Outcome::Unsubscribed(_)));
        for refused in [401, 403] {
            assert!(
                matches!(w.outcome(&answer(refused, &[], b"")), Outcome::Unsubscribed(_)),
                "a {refused} concerns that subscription, not the destination"
            );
        }
        assert!(matches!(w.outcome(&answer(201, &[], b"")), Outcome::Accepted { .. }));
    }
}
