//! The keys tokens are verified with: a shared secret (HS256), a PEM public key (RS256 or
//! ES256), and a local JWKS file chosen by `kid` and read again when it changes (rotation
//! without a restart). The algorithm comes from the key, never from the token alone.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, JwkSet},
    Algorithm, DecodingKey,
};

use super::config::{AuthConfig, AuthMode};

/// A key's family: the one algorithm it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Hmac,
    Rsa,
    Ec,
}

impl Family {
    pub(crate) fn algorithm(self) -> Algorithm {
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

/// The configured keys.
pub(crate) struct Keys {
    secret: Option<DecodingKey>,
    public: Option<(Family, DecodingKey)>,
    jwks: Option<Mutex<Jwks>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("secret", &self.secret.is_some())
            .field("public", &self.public.as_ref().map(|(f, _)| *f))
            .field("jwks", &self.jwks.is_some())
            .finish()
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

impl Keys {
    /// Loads the configured keys (`secret` is the HS256 secret in force: the configured one,
    /// or dev mode's, derived from it or random); an error names the setting and what is
    /// wrong with it.
    pub(crate) fn load(c: &AuthConfig, secret: Option<&String>) -> Result<Keys, String> {
        if c.hs256_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("auth.hs256_secret (JWT_HS256_SECRET): at least 32 characters".into());
        }
        let secret = secret.map(|s| DecodingKey::from_secret(s.as_bytes()));
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
        if c.mode == AuthMode::Jwt && secret.is_none() && public.is_none() && jwks.is_none() {
            return Err(
                "auth.mode (AUTH_MODE) is jwt but no key is configured: set JWT_HS256_SECRET, JWT_PUBLIC_KEY_FILE \
                 or JWT_JWKS_FILE (or AUTH_MODE=none for development)"
                    .into(),
            );
        }
        Ok(Keys { secret, public, jwks })
    }

    /// The key for a token's header: by `kid` from the JWKS, else the configured key of the
    /// algorithm's family. `None` when no configured key verifies that algorithm.
    pub(crate) fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Option<(Family, DecodingKey)> {
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
}
