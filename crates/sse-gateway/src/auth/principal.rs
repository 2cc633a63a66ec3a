//! Who a caller is once its token is verified, what it may do, and why a token is refused.

use event_bus::Channel;

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

    /// When the token expires, as an instant; None without `exp`, or when `exp` is too far
    /// away for an instant (it never comes).
    pub fn expires_instant(&self) -> Option<std::time::Instant> {
        let left = self.expires_at?.saturating_sub(event_bus::Timestamp::now_ms() / 1000);
        std::time::Instant::now().checked_add(std::time::Duration::from_secs(left))
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
