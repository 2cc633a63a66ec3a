//! Web Push subscriptions (RFC 8030): the browsers a user allowed to be woken, each a push
//! service endpoint and the keys its messages are encrypted to (RFC 8291). The gateway stores
//! them (`/api/push/subscriptions`, per user, authenticated); the sinks read them to deliver and
//! delete the ones a push service says are gone (404/410). Stored ([`crate::PushStore`]) per user under
//! `<prefix>user:{<user>}:push` (hash id → JSON), at most `max_per_user` (the oldest go first).
//!
//! An endpoint is a URL a browser sent, so it is taken only from a push service this deployment
//! allows ([`host_allowed`]: `https://` to a listed host, `*.` for its subdomains; a
//! `http://127.x.y.z:port` entry for a local stand-in): no request goes anywhere a caller chose.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The push services of the browsers in use: Chrome/Edge (FCM), Firefox, Safari, and Windows.
pub const DEFAULT_PUSH_HOSTS: &[&str] = &[
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "web.push.apple.com",
    "*.push.apple.com",
    "*.notify.windows.com",
];

/// The longest endpoint URL taken.
pub const MAX_ENDPOINT: usize = 2048;

/// One browser's subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id: from the endpoint, so subscribing the same browser again is the same one.
    pub id: String,
    /// The push service URL its messages go to.
    pub endpoint: String,
    /// The browser's P-256 public key, base64url (65 bytes, uncompressed).
    pub p256dh: String,
    /// The browser's authentication secret, base64url (16 bytes).
    pub auth: String,
    /// When it was stored, Unix ms.
    pub created_at: u64,
}

impl Subscription {
    /// The endpoint's host (what a listing shows: the endpoint itself is a capability).
    pub fn host(&self) -> &str {
        self.endpoint
            .split_once("://")
            .map_or("", |(_, r)| r.split(['/', '?']).next().unwrap_or(""))
    }
}

/// The id of an endpoint: the first 16 hex digits of its SHA-256.
pub fn id_of(endpoint: &str) -> String {
    let h = Sha256::digest(endpoint.as_bytes());
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `h` can be an entry of an allowed-hosts list: a host name, `*.<domain>`, or
/// `http://127.x.y.z:<port>` / `http://localhost:<port>` / `http://[::1]:<port>` (a local
/// stand-in: the parsed host must be a loopback address, so `http://127.evil.example:80` is not).
pub fn allowed_entry(h: &str) -> bool {
    match h.strip_prefix("http://") {
        Some(a) => a.contains(':') && loopback_authority(a),
        None => !h.is_empty() && !h.contains(['/', ' ', '@', ':', '\\']),
    }
}

/// Whether `host` (a URL's host: a name, an IPv4 address or a bracketed IPv6 one) is this
/// machine: `localhost` or a loopback address, parsed, never matched by prefix.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a URL's authority (`host[:port]`) names only this machine: no user info (in
/// `http://127.0.0.1@evil.example/` the host is `evil.example`), a loopback host, and a
/// port of digits if any.
pub fn loopback_authority(authority: &str) -> bool {
    if authority.contains(['@', '/', '\\', '?', '#', ' ']) {
        return false;
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && is_loopback_host(host)
}

/// The authority (`[user@]host[:port]`) of a URL: what follows `scheme://` up to the first
/// `/`, `\`, `?` or `#` (a `\` ends it too, as browsers and reqwest read `http:` URLs).
pub fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '\\', '?', '#']).next().unwrap_or(""))
}

/// Whether `endpoint` is at a push service `allowed` lists; the error says why not.
pub fn host_allowed(endpoint: &str, allowed: &[String]) -> Result<(), String> {
    if endpoint.len() > MAX_ENDPOINT {
        return Err(format!("endpoint: longer than {MAX_ENDPOINT} characters"));
    }
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or("endpoint: not a URL (https://<push service>/...)")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err("endpoint: not a URL (https://<push service>/...)".into());
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let ok = allowed.iter().any(|a| match a.strip_prefix("http://") {
        // A local stand-in: exactly that loopback address and port, over plain HTTP.
        Some(local) => scheme == "http" && authority == local,
        None if scheme != "https" => false,
        None => match a.strip_prefix("*.") {
            Some(parent) => host.len() > parent.len() + 1 && host.ends_with(&format!(".{parent}")),
            None => authority == a || host == a && !authority.contains(':'),
        },
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "endpoint: {scheme}://{authority} is not a push service this server sends to (notifications.push.allowed_hosts)"
        ))
    }
}

fn decoded(what: &str, value: &str, len: usize) -> Result<Vec<u8>, String> {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("keys.{what}: not base64url"))?;
    if b.len() != len {
        return Err(format!("keys.{what}: {} bytes, not {len}", b.len()));
    }
    Ok(b)
}

/// The bytes of a VAPID public key (base64url of an uncompressed P-256 point).
pub fn public_key_bytes(key: &str) -> Result<Vec<u8>, String> {
    let b = decoded("public_key", key, 65).map_err(|e| e.trim_start_matches("keys.").to_owned())?;
    if b[0] != 4 {
        return Err("public_key: not an uncompressed P-256 point".into());
    }
    Ok(b)
}

/// A subscription as a browser's `PushSubscription.toJSON()` gives it, checked: the endpoint at
/// an allowed push service, `p256dh` an uncompressed P-256 point, `auth` 16 bytes.
pub fn check(
    endpoint: &str,
    p256dh: &str,
    auth: &str,
    allowed: &[String],
    now_ms: u64,
) -> Result<Subscription, String> {
    host_allowed(endpoint, allowed)?;
    if decoded("p256dh", p256dh, 65)?[0] != 4 {
        return Err("keys.p256dh: not an uncompressed P-256 point".into());
    }
    decoded("auth", auth, 16)?;
    Ok(Subscription {
        id: id_of(endpoint),
        endpoint: endpoint.to_owned(),
        p256dh: p256dh.trim_end_matches('=').to_owned(),
        auth: auth.trim_end_matches('=').to_owned(),
        created_at: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256DH: &str = "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
    const AUTH: &str = "_ordMnz7uTCmrpBTeUV4Bw";

    fn hosts() -> Vec<String> {
        let mut h: Vec<String> = DEFAULT_PUSH_HOSTS.iter().map(|s| s.to_string()).collect();
        h.push("http://127.0.0.1:4000".into());
        h
    }

    #[test]
    fn only_allowed_push_services() {
        let h = hosts();
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "https://wns2-par02p.notify.windows.com/w/?token=x",
            "http://127.0.0.1:4000/push/1",
        ] {
            host_allowed(ok, &h).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://fcm.googleapis.com/fcm/send/abc",
            "https://fcm.googleapis.com.evil.example/x",
            "https://evil.example/fcm.googleapis.com",
            "https://notify.windows.com/x",
            "https://user@fcm.googleapis.com/x",
            "https://fcm.googleapis.com:8443/x",
            "http://127.0.0.1:4001/push/1",
            "http://169.254.169.254/latest/meta-data",
            "fcm.googleapis.com/x",
        ] {
            assert!(host_allowed(bad, &h).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_stand_ins_are_loopback_by_parsed_address() {
        for ok in [
            "http://127.0.0.1:4000",
            "http://127.1.2.3:9",
            "http://localhost:80",
            "http://[::1]:4000",
        ] {
            assert!(allowed_entry(ok), "{ok}");
        }
        for bad in [
            "http://127.evil.example:80",
            "http://127.0.0.1@evil.example:80",
            "http://127.0.0.1:80@evil.example",
            "http://localhost.evil.example:80",
            "http://127.0.0.1",
            "http://10.0.0.1:80",
            "http://127.0.0.1:8x",
        ] {
            assert!(!allowed_entry(bad), "{bad}");
        }
        assert!(is_loopback_host("127.0.0.1") && is_loopback_host("[::1]") && is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("127.evil.example") && !is_loopback_host("::ffff:10.0.0.1"));
        assert_eq!(
            authority_of("http://127.0.0.1@evil.example/x"),
            Some("127.0.0.1@evil.example")
        );
        assert_eq!(authority_of("http://evil.example\\@127.0.0.1/"), Some("evil.example"));
    }

    #[test]
    fn keys_are_checked_and_the_id_follows_the_endpoint() {
        let h = hosts();
        let e = "https://fcm.googleapis.com/fcm/send/abc";
        let s = check(e, P256DH, AUTH, &h, 1).unwrap();
        assert_eq!(s.id, id_of(e));
        assert_eq!(s.host(), "fcm.googleapis.com");
        assert_ne!(id_of(e), id_of("https://fcm.googleapis.com/fcm/send/abd"));
        assert!(check(e, &P256DH[..40], AUTH, &h, 1)
            .unwrap_err()
            .starts_with("keys.p256dh"));
        assert!(check(e, P256DH, "AAAA", &h, 1).unwrap_err().starts_with("keys.auth"));
        assert!(check(e, P256DH, "!!", &h, 1).unwrap_err().contains("base64url"));
    }
}
