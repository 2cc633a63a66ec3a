//! Authentication settings (`AUTH_MODE`, `JWT_HS256_SECRET`, `JWT_PUBLIC_KEY_FILE`,
//! `JWT_JWKS_FILE`; `docs/reference.md`, "Configuration").

use std::{collections::BTreeMap, path::PathBuf};

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
    /// Development with real tokens: verified like `jwt`, and `GET /api/dev/token` hands one
    /// to whoever asks; the dashboard takes its token there (logged loudly at start). `make
    /// run` uses it. Its HS256 key is its own: derived from `JWT_HS256_SECRET` (replicas share
    /// it), or random per process; never the secret itself, so its tokens are worth nothing
    /// to a `jwt` gateway with that secret.
    Dev,
}

impl AuthMode {
    /// Whether requests carry tokens (`jwt`, `dev`).
    pub fn uses_tokens(self) -> bool {
        self != AuthMode::None
    }
}

/// Authentication settings.
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
    /// The key stream tickets are signed with (32+ characters); unset: one derived from the
    /// HS256 secret, and no tickets with public keys only.
    pub ticket_secret: Option<String>,
    /// How long a stream ticket opens a stream, in seconds.
    pub ticket_ttl_secs: u64,
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
            ticket_secret: None,
            ticket_ttl_secs: 30,
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
            .field("ticket_secret", &self.ticket_secret.as_ref().map(|_| "<redacted>"))
            .field("ticket_ttl_secs", &self.ticket_ttl_secs)
            .finish()
    }
}
