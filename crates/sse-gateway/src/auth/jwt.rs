//! Verifying a token: the algorithm comes from the key, never from the token alone (a secret
//! verifies only HS256, an RSA key only RS256, a P-256 key only ES256; a header naming another
//! algorithm, `alg: none` included, is refused before any signature check). `exp` and `sub`
//! are required; `nbf` is checked when present; `aud` and `iss` when configured; a small
//! leeway (default 30 s) absorbs clock skew. `AUTH_MODE=dev` also mints tokens.

use jsonwebtoken::{errors::ErrorKind, Algorithm, Validation};
use serde::Deserialize;

use event_bus::Channel;

use super::{
    config::{AuthConfig, AuthMode},
    keys::Keys,
    principal::{AuthError, Grant, Principal},
    ticket::Tickets,
    token::{service_key, token},
};

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    channels: Option<ChannelsClaim>,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ChannelsClaim {
    One(String),
    Many(Vec<String>),
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    mode: AuthMode,
    keys: Keys,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
    cookie: String,
    service_keys: Vec<(String, String)>,
    /// `AUTH_MODE=dev`: the key `/api/dev/token` signs with.
    minting: Option<jsonwebtoken::EncodingKey>,
    /// Stream tickets, when a key for them is configured or derived.
    tickets: Option<Tickets>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("mode", &self.mode)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads the keys; an error names the setting and what is wrong with it.
    pub fn new(c: &AuthConfig) -> Result<Verifier, String> {
        // Dev mode without a configured secret: a random one, good for this process only.
        let random = (c.mode == AuthMode::Dev && c.hs256_secret.is_none())
            .then(|| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
        let configured = c.hs256_secret.as_ref().or(random.as_ref());
        // Dev mode signs and verifies with a key of its own, derived from the secret: replicas
        // given the same secret share it, and a dev instance started with the production
        // secret hands out tokens that no `jwt` gateway accepts (nor does it accept theirs).
        let dev_secret = configured
            .filter(|_| c.mode == AuthMode::Dev)
            .map(|s| format!("{s}\u{0}dev-token"));
        let secret_text = dev_secret.as_ref().or(configured);
        let keys = Keys::load(c, secret_text)?;
        let minting = secret_text
            .filter(|_| c.mode == AuthMode::Dev)
            .map(|s| jsonwebtoken::EncodingKey::from_secret(s.as_bytes()));
        for (name, key) in &c.service_keys {
            if key.len() < 32 {
                return Err(format!("auth.service_keys.{name}: at least 32 characters"));
            }
        }
        // NaN fails both checks.
        if c.publish_rate_per_sec.is_nan() || c.publish_rate_per_sec <= 0.0 {
            return Err("auth.publish_rate_per_sec: must be > 0".into());
        }
        // A batch takes one token per event: a burst below the largest batch would answer such
        // a batch 429 forever.
        let batch = crate::limit::MAX_PUBLISH_BATCH as f64;
        if c.publish_burst.is_nan() || c.publish_burst < batch {
            return Err(format!(
                "auth.publish_burst: {} is below {batch}, the largest publish batch (which could never be taken)",
                c.publish_burst
            ));
        }
        let tickets = Tickets::new(c, secret_text.map(String::as_str))?;
        Ok(Verifier {
            tickets,
            mode: c.mode,
            keys,
            audience: c.audience.clone(),
            issuer: c.issuer.clone(),
            leeway: c.leeway_secs,
            cookie: c.cookie_name.clone(),
            service_keys: c.service_keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            minting,
        })
    }

    /// `AUTH_MODE=dev` only: a token for `sub` with `role` and `channels` (a list or `"*"`),
    /// valid `ttl_secs`; with its `exp`.
    pub fn mint(
        &self,
        sub: &str,
        role: Option<&str>,
        channels: serde_json::Value,
        ttl_secs: u64,
    ) -> Option<(String, u64)> {
        let key = self.minting.as_ref()?;
        let now = event_bus::Timestamp::now_ms() / 1000;
        let mut claims = serde_json::json!({"sub": sub, "exp": now + ttl_secs, "iat": now, "channels": channels});
        if let Some(r) = role {
            claims["role"] = r.into();
        }
        if let Some(aud) = &self.audience {
            claims["aud"] = aud.clone().into();
        }
        if let Some(iss) = &self.issuer {
            claims["iss"] = iss.clone().into();
        }
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, key).ok()?;
        Some((token, now + ttl_secs))
    }

    /// Stream tickets (None: no key for them).
    pub fn tickets(&self) -> Option<&Tickets> {
        self.tickets.as_ref()
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Who sends this request (`AUTH_MODE=none`: the development principal); `query_token` is
    /// the query's `access_token`, decoded.
    pub fn authenticate(
        &self,
        headers: &axum::http::HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Principal::development());
        }
        if let Some(given) = headers.get("x-service-key").and_then(|v| v.to_str().ok()) {
            return service_key(given, &self.service_keys)
                .map(|name| Principal {
                    sub: format!("service:{name}"),
                    channels: Grant::All,
                    role: Some("publisher".into()),
                    expires_at: None,
                })
                .ok_or_else(|| AuthError::Invalid("unknown service key".into()));
        }
        self.verify(&token(headers, query_token, &self.cookie)?)
    }

    /// Verifies `token` and returns who it is for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Principal::development());
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("unreadable header ({e}); alg none is never accepted")))?;
        let (family, key) = self.keys.key_for(header.alg, header.kid.as_deref()).ok_or_else(|| {
            AuthError::Invalid(format!(
                "algorithm {:?} is not accepted with the configured keys",
                header.alg
            ))
        })?;
        let mut v = Validation::new(family.algorithm());
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let c = data.claims;
        if c.sub.is_empty() {
            return Err(AuthError::Invalid("sub is empty".into()));
        }
        let channels = match c.channels {
            None => Grant::Some(Vec::new()),
            Some(ChannelsClaim::One(s)) if s == "*" => Grant::All,
            Some(ChannelsClaim::One(s)) => Grant::Some(parse_channels(&[s])?),
            Some(ChannelsClaim::Many(list)) if list.iter().any(|s| s == "*") => Grant::All,
            Some(ChannelsClaim::Many(list)) => Grant::Some(parse_channels(&list)?),
        };
        Ok(Principal {
            sub: c.sub,
            channels,
            role: c.role,
            expires_at: Some(c.exp),
        })
    }

    /// The token of a request (see [`token`]).
    pub fn token(&self, headers: &axum::http::HeaderMap, query_token: Option<&str>) -> Result<String, AuthError> {
        token(headers, query_token, &self.cookie)
    }
}

fn parse_channels(list: &[String]) -> Result<Vec<Channel>, AuthError> {
    list.iter()
        .map(|s| Channel::new(s.as_str()).map_err(|e| AuthError::Invalid(format!("channels claim: {e}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::{from_query, redact};
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use std::{
        path::PathBuf,
        time::{Duration, Instant, SystemTime},
    };

    const SECRET: &str = "a-test-only-secret-of-32-characters!";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn verifier(tweak: impl FnOnce(&mut AuthConfig)) -> Verifier {
        let mut c = AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..Default::default()
        };
        tweak(&mut c);
        Verifier::new(&c).unwrap()
    }

    /// A key pair made by openssl at test time (no key is ever committed).
    fn openssl_pair(dir: &std::path::Path, kind: &str) -> (Vec<u8>, PathBuf) {
        let private = dir.join(format!("{kind}.key"));
        let public = dir.join(format!("{kind}.pub"));
        let gen: &[&str] = if kind == "rsa" {
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        } else {
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        };
        let ok = std::process::Command::new("openssl")
            .args(gen)
            .arg("-out")
            .arg(&private)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is needed for the key tests")
            .success();
        assert!(ok);
        let ok = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        (std::fs::read(&private).unwrap(), public)
    }

    #[test]
    fn hs256_claims_become_a_principal() {
        let v = verifier(|_| {});
        let p = v
            .verify(&hs(
                json!({"sub": "u1", "exp": now() + 60, "channels": ["orders"], "role": "publisher"}),
            ))
            .unwrap();
        assert_eq!(p.sub, "u1");
        assert!(p.allows(&Channel::ORDERS) && !p.allows(&Channel::PRICING));
        assert!(p.can_publish() && !p.is_admin());
        assert_eq!(p.refused(&[Channel::ORDERS, Channel::PRICING]), vec![&Channel::PRICING]);
        let all = v
            .verify(&hs(json!({"sub": "a", "exp": now() + 60, "channels": "*"})))
            .unwrap();
        assert_eq!(all.channels, Grant::All);
        let none = v.verify(&hs(json!({"sub": "n", "exp": now() + 60}))).unwrap();
        assert!(!none.allows(&Channel::ORDERS), "no channels claim grants nothing");
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        let v = verifier(|c| {
            c.audience = Some("rakuda".into());
            c.issuer = Some("https://auth.example".into());
            c.leeway_secs = 0;
        });
        let good = json!({"sub": "u", "exp": now() + 60, "aud": "rakuda", "iss": "https://auth.example"});
        assert!(v.verify(&hs(good.clone())).is_ok());
        let with = |k: &str, val: serde_json::Value| {
            let mut c = good.clone();
            c[k] = val;
            hs(c)
        };
        assert_eq!(v.verify(&with("exp", json!(now() - 5))), Err(AuthError::Expired));
        assert_eq!(v.verify(&with("nbf", json!(now() + 600))), Err(AuthError::NotYetValid));
        assert_eq!(v.verify(&with("aud", json!("other"))), Err(AuthError::WrongAudience));
        assert_eq!(
            v.verify(&with("iss", json!("https://evil.example"))),
            Err(AuthError::WrongIssuer)
        );
        // Wrong signature.
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"another-secret-of-32-characters!!"),
        )
        .unwrap();
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
        // alg: none, hand-made (no library signs it).
        use base64::Engine;
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&good));
        assert!(matches!(v.verify(&none), Err(AuthError::Invalid(_))));
        // Missing exp, missing sub, garbage.
        assert!(matches!(
            v.verify(&hs(json!({"sub": "u", "aud": "rakuda", "iss": "https://auth.example"}))),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            v.verify(&hs(
                json!({"exp": now() + 60, "aud": "rakuda", "iss": "https://auth.example"})
            )),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(v.verify("not.a.jwt"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn rs256_es256_and_no_algorithm_confusion() {
        let dir = tempfile::tempdir().unwrap();
        let (rsa_private, rsa_public) = openssl_pair(dir.path(), "rsa");
        let (ec_private, ec_public) = openssl_pair(dir.path(), "ec");
        let claims = json!({"sub": "u", "exp": now() + 60, "channels": "*"});
        let rs = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
        )
        .unwrap();
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(&ec_private).unwrap(),
        )
        .unwrap();
        let rsa = Verifier::new(&AuthConfig {
            public_key_file: Some(rsa_public.clone()),
            ..Default::default()
        })
        .unwrap();
        assert!(rsa.verify(&rs).is_ok());
        assert!(rsa.verify(&es).is_err(), "an ES256 token against an RSA key");
        let ec = Verifier::new(&AuthConfig {
            public_key_file: Some(ec_public),
            ..Default::default()
        })
        .unwrap();
        assert!(ec.verify(&es).is_ok());
        // HS/RS confusion: an HS256 token signed with the RSA public key's bytes as the secret.
        let pem = std::fs::read(&rsa_public).unwrap();
        let confused = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&pem)).unwrap();
        assert!(matches!(rsa.verify(&confused), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid_and_rotate_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let key = |kid: &str, secret: &str| {
            use base64::Engine;
            json!({"kty": "oct", "kid": kid, "alg": "HS256",
                   "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)})
        };
        std::fs::write(
            &jwks,
            json!({"keys": [key("k1", "first-secret-of-32-characters-ok!")]}).to_string(),
        )
        .unwrap();
        let v = Verifier::new(&AuthConfig {
            jwks_file: Some(jwks.clone()),
            ..Default::default()
        })
        .unwrap();
        let token = |kid: &str, secret: &str| {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.into());
            encode(
                &h,
                &json!({"sub": "u", "exp": now() + 60}),
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        assert!(v.verify(&token("k1", "first-secret-of-32-characters-ok!")).is_ok());
        assert!(v.verify(&token("k2", "second-secret-of-32-characters-ok")).is_err());
        // Rotation: k2 added, k1 retired; picked up within the re-read interval (2 s).
        std::thread::sleep(Duration::from_millis(1100)); // a new mtime second on coarse file systems
        std::fs::write(
            &jwks,
            json!({"keys": [key("k2", "second-secret-of-32-characters-ok")]}).to_string(),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while v.verify(&token("k2", "second-secret-of-32-characters-ok")).is_err() {
            assert!(Instant::now() < deadline, "the rotated JWKS was not picked up");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(v.verify(&token("k1", "first-secret-of-32-characters-ok!")).is_err());
    }

    #[test]
    fn tokens_from_header_cookie_or_query_and_redaction() {
        use axum::http::{header, HeaderMap, HeaderValue};
        let v = verifier(|_| {});
        let mut h = HeaderMap::new();
        assert!(matches!(
            v.token(&h, from_query(Some("channels=orders")).as_deref()),
            Err(AuthError::Missing(_))
        ));
        assert_eq!(
            v.token(&h, from_query(Some("channels=orders&access_token=q.t.s")).as_deref())
                .unwrap(),
            "q.t.s"
        );
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; rakuda_token=c.t.s"));
        assert_eq!(v.token(&h, Some("q.t.s")).unwrap(), "c.t.s");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer h.t.s"));
        assert_eq!(v.token(&h, None).unwrap(), "h.t.s");
        assert_eq!(
            redact("/api/realtime/events?channels=orders&access_token=secret.jwt.value"),
            "/api/realtime/events?channels=orders&access_token=REDACTED"
        );
        assert_eq!(
            redact("/api/realtime/events?ticket=t.k.t&channels=orders"),
            "/api/realtime/events?ticket=REDACTED&channels=orders"
        );
        assert_eq!(redact("/healthz"), "/healthz");
        assert!(!format!(
            "{:?}",
            AuthConfig {
                hs256_secret: Some(SECRET.into()),
                ..Default::default()
            }
        )
        .contains(SECRET));
    }

    #[test]
    fn jwt_mode_without_keys_names_the_settings() {
        let e = Verifier::new(&AuthConfig::default()).unwrap_err();
        assert!(e.contains("JWT_HS256_SECRET") && e.contains("AUTH_MODE"), "{e}");
        let e = Verifier::new(&AuthConfig {
            hs256_secret: Some("short".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("32"), "{e}");
        let none = Verifier::new(&AuthConfig {
            mode: AuthMode::None,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(none.verify("anything").unwrap(), Principal::development());
    }

    #[test]
    fn dev_mode_mints_tokens_that_verify_like_production_ones() {
        let dev = Verifier::new(&AuthConfig {
            mode: AuthMode::Dev,
            ..Default::default()
        })
        .unwrap();
        let (t, exp) = dev
            .mint("alice", Some("publisher"), serde_json::json!(["orders"]), 60)
            .unwrap();
        let p = dev.verify(&t).unwrap();
        assert_eq!(
            (p.sub.as_str(), p.role.as_deref(), p.expires_at),
            ("alice", Some("publisher"), Some(exp))
        );
        assert!(p.allows(&Channel::ORDERS) && !p.allows(&Channel::PRICING));
        assert!(
            dev.verify(&format!("{t}x")).is_err(),
            "a bad signature is still refused"
        );
        // Each process has its own random secret unless one is configured: replicas share it.
        let other = Verifier::new(&AuthConfig {
            mode: AuthMode::Dev,
            ..Default::default()
        })
        .unwrap();
        assert!(other.verify(&t).is_err());
        let shared = |mode| {
            Verifier::new(&AuthConfig {
                mode,
                hs256_secret: Some("a-shared-development-secret-of-32-chars".into()),
                ..Default::default()
            })
            .unwrap()
        };
        let (t, _) = shared(AuthMode::Dev)
            .mint("bob", None, serde_json::json!("*"), 60)
            .unwrap();
        assert_eq!(
            shared(AuthMode::Dev).verify(&t).unwrap().sub,
            "bob",
            "replicas share dev tokens"
        );
        // A dev instance given the production secret mints nothing production takes, and
        // takes nothing production minted.
        assert!(
            shared(AuthMode::Jwt).verify(&t).is_err(),
            "a dev token verified on a jwt gateway with the same secret"
        );
        let production = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "root", "exp": 4_000_000_000u64, "role": "admin", "channels": "*"}),
            &jsonwebtoken::EncodingKey::from_secret(b"a-shared-development-secret-of-32-chars"),
        )
        .unwrap();
        assert_eq!(shared(AuthMode::Jwt).verify(&production).unwrap().sub, "root");
        assert!(shared(AuthMode::Dev).verify(&production).is_err());
        assert!(
            shared(AuthMode::Jwt)
                .mint("x", None, serde_json::json!("*"), 60)
                .is_none(),
            "only dev mints"
        );
    }
}
