//! [`Secret`]: a credential that never prints.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A credential: `env:NAME` (read from the environment), `file:/path` (read from a file, again
/// at each use, so a rotated key is picked up), or the value itself. Never printed: `Debug`,
/// `Display` and serialising all say `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret given as its value (tests, and values set straight in the environment).
    pub fn literal(value: &str) -> Secret {
        Secret(value.to_owned())
    }

    /// The value now; the error says which variable or file is missing, never the value.
    pub fn value(&self) -> Result<String, String> {
        if let Some(name) = self.0.strip_prefix("env:") {
            std::env::var(name).map_err(|_| format!("the variable {name} is not set"))
        } else if let Some(path) = self.0.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("the file {path} cannot be read: {e}"))
        } else {
            Ok(self.0.clone())
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}
