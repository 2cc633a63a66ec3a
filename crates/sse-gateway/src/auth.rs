//! Who is calling: JWT verification (HS256 with a shared secret; RS256/ES256 with a public key
//! or a local JWKS file rotated by `kid`), where a token may come from, and what it allows.
//!
//! This is the verification core of the authentication issue: the endpoints use it once it is
//! wired into them (next step); everything here is tested on its own.
//!
//! # Rules
//! - The algorithm comes from the key, never from the token alone: a secret verifies only
//!   HS256, an RSA key only RS256, a P-256 key only ES256. A token whose header names another
//!   algorithm (HS/RS confusion, `alg: none`) is refused before any signature check.
//! - `exp` is required; `nbf` is checked when present; `aud` and `iss` when configured; a small
//!   leeway (default 30 s) absorbs clock skew.
//! - EventSource cannot set headers, so a token is taken from `Authorization: Bearer`, from a
//!   cookie, or from `?access_token=`; [`redact`] removes the last from anything logged.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use event_bus::Channel;
use jsonwebtoken::{
    errors::ErrorKind,
    jwk::{AlgorithmParameters, JwkSet},
    Algorithm, DecodingKey, Validation,
};
use serde::{Deserialize, Serialize};

/// How requests are authenticated (`AUTH_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request needs a valid token.
    #[default]
    Jwt,
    /// Development only: everyone is an admin of every channel (logged loudly at start).
    None,
    /// Development with real tokens: verified like `jwt` (HS256, `JWT_HS256_SECRET` or a random
    /// secret per process), and `GET /api/dev/token` hands one to whoever asks; the dashboard
    /// takes its token there (logged loudly at start). `make run` uses it.
    Dev,
}

impl AuthMode {
    /// Whether requests carry tokens (`jwt`, `dev`).
    pub fn uses_tokens(self) -> bool {
        self != AuthMode::None
    }
}

/// Authentication settings (CONTRACT §5 names: `AUTH_MODE`, `JWT_HS256_SECRET`,
/// `JWT_PUBLIC_KEY_FILE`, `JWT_JWKS_FILE`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `jwt`, `dev` or `none`.
    pub mode: AuthMode,
    /// Shared secret for HS256 tokens.
    pub hs256_secret: Option<String>,
    /// A PEM public key (RSA for RS256, P-256 for ES256).
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file; keys are chosen by the token's `kid`; the file is read again when it
    /// changes (key rotation without a restart).
    pub jwks_file: Option<PathBuf>,
    /// The `aud` a token must carry, when set.
    pub audience: Option<String>,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The cookie a browser's token may come in.
    pub cookie_name: String,
    /// Paths served without a token (the dashboard's static files always are).
    pub open_paths: Vec<String>,
    /// Service keys for publishers that are not users (name -> key, 32+ characters), sent as
    /// `X-Service-Key`; such a caller is `service:<name>`, role `publisher`, every channel.
    pub service_keys: BTreeMap<String, String>,
    /// Events one caller may publish per second, sustained.
    pub publish_rate_per_sec: f64,
    /// Events one caller may publish at once above the sustained rate.
    pub publish_burst: f64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Jwt,
            hs256_secret: None,
            public_key_file: None,
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway_secs: 30,
            cookie_name: "rakuda_token".into(),
            open_paths: vec!["/healthz".into(), "/readyz".into(), "/metrics".into()],
            service_keys: BTreeMap::new(),
            publish_rate_per_sec: 200.0,
            publish_burst: 1000.0,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .field("cookie_name", &self.cookie_name)
            .field("open_paths", &self.open_paths)
            .field("service_keys", &self.service_keys.keys().collect::<Vec<_>>())
            .field("publish_rate_per_sec", &self.publish_rate_per_sec)
            .field("publish_burst", &self.publish_burst)
            .finish()
    }
}

/// Why a request is refused; `code` is stable, the message says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token anywhere.
    #[error("a token is required: Authorization: Bearer <jwt>, the {0} cookie, or ?access_token=")]
    Missing(String),
    /// Malformed, badly signed, or of an algorithm the key does not allow.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// Past its `exp`.
    #[error("the token has expired: get a fresh one")]
    Expired,
    /// Before its `nbf`.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// Wrong `aud`.
    #[error("the token is for another audience")]
    WrongAudience,
    /// Wrong `iss`.
    #[error("the token is from another issuer")]
    WrongIssuer,
}

impl AuthError {
    /// The stable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing_token",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
        }
    }
}

/// The channels a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `"*"`: every channel.
    All,
    /// These channels only.
    Some(Vec<Channel>),
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `sub`: the user (or service) id.
    pub sub: String,
    /// `channels`.
    pub channels: Grant,
    /// `role`: `admin` (connections, test events), `publisher` (publish), or none.
    pub role: Option<String>,
    /// `exp`, Unix seconds (`None` in `none` mode).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The development principal of `AUTH_MODE=none`.
    pub fn development() -> Principal {
        Principal {
            sub: "dev".into(),
            channels: Grant::All,
            role: Some("admin".into()),
            expires_at: None,
        }
    }

    /// Whether the token grants `channel`.
    pub fn allows(&self, channel: &Channel) -> bool {
        match &self.channels {
            Grant::All => true,
            Grant::Some(list) => list.contains(channel),
        }
    }

    /// The channels of `wanted` the token does not grant.
    pub fn refused<'a>(&self, wanted: &'a [Channel]) -> Vec<&'a Channel> {
        wanted.iter().filter(|c| !self.allows(c)).collect()
    }

    /// `admin`.
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some("admin")
    }

    /// `publisher` (or `admin`).
    pub fn can_publish(&self) -> bool {
        matches!(self.role.as_deref(), Some("publisher" | "admin"))
    }
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
}

impl Family {
    fn algorithm(self) -> Algorithm {
        match self {
            Family::Hmac => Algorithm::HS256,
            Family::Rsa => Algorithm::RS256,
            Family::Ec => Algorithm::ES256,
        }
    }
}

struct Jwks {
    path: PathBuf,
    modified: Option<SystemTime>,
    checked: Instant,
    keys: BTreeMap<String, (Family, DecodingKey)>,
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    mode: AuthMode,
    secret: Option<DecodingKey>,
    public: Option<(Family, DecodingKey)>,
    jwks: Option<Mutex<Jwks>>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
    cookie: String,
    service_keys: Vec<(String, String)>,
    /// `AUTH_MODE=dev`: the key `/api/dev/token` signs with.
    minting: Option<jsonwebtoken::EncodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("mode", &self.mode)
            .field("secret", &self.secret.is_some())
            .field("public", &self.public.as_ref().map(|(f, _)| *f))
            .field("jwks", &self.jwks.is_some())
            .finish_non_exhaustive()
    }
}

fn read_jwks(path: &PathBuf) -> Result<BTreeMap<String, (Family, DecodingKey)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("{}: not a JWKS: {e}", path.display()))?;
    let mut keys = BTreeMap::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("{}: every key needs a kid", path.display()))?;
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKey(_) => Family::Hmac,
            _ => return Err(format!("{}: key {kid}: unsupported key type", path.display())),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: key {kid}: {e}", path.display()))?;
        keys.insert(kid, (family, key));
    }
    Ok(keys)
}

impl Verifier {
    /// Loads the keys; an error names the setting and what is wrong with it.
    pub fn new(c: &AuthConfig) -> Result<Verifier, String> {
        // Dev mode without a configured secret: a random one, good for this process only.
        let dev_secret = (c.mode == AuthMode::Dev && c.hs256_secret.is_none())
            .then(|| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
        let secret_text = c.hs256_secret.as_ref().or(dev_secret.as_ref());
        let secret = match secret_text {
            Some(s) if s.len() < 32 => {
                return Err("auth.hs256_secret (JWT_HS256_SECRET): at least 32 characters".into())
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let minting = secret_text
            .filter(|_| c.mode == AuthMode::Dev)
            .map(|s| jsonwebtoken::EncodingKey::from_secret(s.as_bytes()));
        let public = match &c.public_key_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("auth.public_key_file (JWT_PUBLIC_KEY_FILE): {}: {e}", path.display()))?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map(|k| (Family::Rsa, k))
                    .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (Family::Ec, k)))
                    .map_err(|_| {
                        format!(
                            "auth.public_key_file (JWT_PUBLIC_KEY_FILE): {} is not an RSA or P-256 public key in PEM",
                            path.display()
                        )
                    })?;
                Some(key)
            }
        };
        let jwks = match &c.jwks_file {
            None => None,
            Some(path) => {
                let keys = read_jwks(path).map_err(|e| format!("auth.jwks_file (JWT_JWKS_FILE): {e}"))?;
                Some(Mutex::new(Jwks {
                    modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
                    path: path.clone(),
                    checked: Instant::now(),
                    keys,
                }))
            }
        };
        for (name, key) in &c.service_keys {
            if key.len() < 32 {
                return Err(format!("auth.service_keys.{name}: at least 32 characters"));
            }
        }
        if !(c.publish_rate_per_sec > 0.0 && c.publish_burst >= 1.0) {
            return Err("auth.publish_rate_per_sec must be > 0 and auth.publish_burst >= 1".into());
        }
        if c.mode == AuthMode::Jwt && secret.is_none() && public.is_none() && jwks.is_none() {
            return Err(
                "auth.mode (AUTH_MODE) is jwt but no key is configured: set JWT_HS256_SECRET, JWT_PUBLIC_KEY_FILE \
                 or JWT_JWKS_FILE (or AUTH_MODE=none for development)"
                    .into(),
            );
        }
        Ok(Verifier {
            mode: c.mode,
            secret,
            public,
            jwks,
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
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

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Who sends this request (`AUTH_MODE=none`: the development principal).
    pub fn authenticate(&self, headers: &axum::http::HeaderMap, query: Option<&str>) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Principal::development());
        }
        if let Some(given) = headers.get("x-service-key").and_then(|v| v.to_str().ok()) {
            // Every key is compared, in constant time: timing tells nothing about which matched.
            let mut found = None;
            for (name, key) in &self.service_keys {
                if ct_eq(given.as_bytes(), key.as_bytes()) {
                    found = Some(name.clone());
                }
            }
            return found
                .map(|name| Principal {
                    sub: format!("service:{name}"),
                    channels: Grant::All,
                    role: Some("publisher".into()),
                    expires_at: None,
                })
                .ok_or_else(|| AuthError::Invalid("unknown service key".into()));
        }
        self.verify(&self.token(headers, query)?)
    }

    /// The key for a token's header: by `kid` from the JWKS, else the configured key of the
    /// algorithm's family. `None` when no configured key verifies that algorithm.
    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Option<(Family, DecodingKey)> {
        if let (Some(jwks), Some(kid)) = (&self.jwks, kid) {
            let mut j = jwks.lock().unwrap();
            if j.checked.elapsed() > Duration::from_secs(2) {
                j.checked = Instant::now();
                let modified = std::fs::metadata(&j.path).and_then(|m| m.modified()).ok();
                if modified != j.modified {
                    match read_jwks(&j.path) {
                        Ok(keys) => {
                            tracing::info!(keys = keys.len(), "JWKS reloaded");
                            j.keys = keys;
                            j.modified = modified;
                        }
                        Err(e) => tracing::warn!(error = %e, "JWKS changed but cannot be read; keeping the old keys"),
                    }
                }
            }
            if let Some((family, key)) = j.keys.get(kid) {
                return (family.algorithm() == alg).then(|| (*family, key.clone()));
            }
        }
        match alg {
            Algorithm::HS256 => self.secret.clone().map(|k| (Family::Hmac, k)),
            Algorithm::RS256 | Algorithm::ES256 => self
                .public
                .as_ref()
                .filter(|(f, _)| f.algorithm() == alg)
                .map(|(f, k)| (*f, k.clone())),
            _ => None,
        }
    }

    /// Verifies `token` and returns who it is for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Principal::development());
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("unreadable header ({e}); alg none is never accepted")))?;
        let (family, key) = self.key_for(header.alg, header.kid.as_deref()).ok_or_else(|| {
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

    /// The token of a request: `Authorization: Bearer`, then the cookie, then the query's
    /// `access_token` (pass the raw query string); an error when there is none.
    pub fn token(&self, headers: &axum::http::HeaderMap, query: Option<&str>) -> Result<String, AuthError> {
        if let Some(v) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
                return Ok(t.trim().to_owned());
            }
        }
        for cookie in headers.get_all(axum::http::header::COOKIE) {
            for part in cookie.to_str().unwrap_or_default().split(';') {
                if let Some((k, v)) = part.trim().split_once('=') {
                    if k == self.cookie && !v.is_empty() {
                        return Ok(v.to_owned());
                    }
                }
            }
        }
        if let Some(q) = query {
            for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default() {
                if k == "access_token" && !v.is_empty() {
                    return Ok(v);
                }
            }
        }
        Err(AuthError::Missing(self.cookie.clone()))
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_channels(list: &[String]) -> Result<Vec<Channel>, AuthError> {
    list.iter()
        .map(|s| Channel::new(s.as_str()).map_err(|e| AuthError::Invalid(format!("channels claim: {e}"))))
        .collect()
}

/// A request target with any `access_token` value replaced by `REDACTED`: for every log line
/// and label that could carry a URL.
pub fn redact(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some(("access_token", _)) => "access_token=REDACTED".to_owned(),
            _ => p.to_owned(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

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
            v.token(&h, Some("channels=orders")),
            Err(AuthError::Missing(_))
        ));
        assert_eq!(
            v.token(&h, Some("channels=orders&access_token=q.t.s")).unwrap(),
            "q.t.s"
        );
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; rakuda_token=c.t.s"));
        assert_eq!(v.token(&h, Some("access_token=q.t.s")).unwrap(), "c.t.s");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer h.t.s"));
        assert_eq!(v.token(&h, None).unwrap(), "h.t.s");
        assert_eq!(
            redact("/api/realtime/events?channels=orders&access_token=secret.jwt.value"),
            "/api/realtime/events?channels=orders&access_token=REDACTED"
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
        assert_eq!(shared(AuthMode::Dev).verify(&t).unwrap().sub, "bob");
        assert_eq!(shared(AuthMode::Jwt).verify(&t).unwrap().sub, "bob");
        assert!(
            shared(AuthMode::Jwt)
                .mint("x", None, serde_json::json!("*"), 60)
                .is_none(),
            "only dev mints"
        );
    }
}
