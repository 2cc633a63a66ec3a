//! What a client asks of a stream, as the transports hand it over (already authenticated; no
//! HTTP types).

/// A stream request.
#[derive(Clone, Debug, Default)]
pub struct StreamRequest {
    /// Channel names (empty: every channel the token grants).
    pub channels: Vec<String>,
    /// Only these types (empty: all).
    pub types: Vec<String>,
    /// Only events about these entities, `payload.id` (empty: all).
    pub ids: Vec<String>,
    /// Where the client was: a cursor, as text.
    pub resume: Option<String>,
    /// Join the user's private notification channel.
    pub join_private: bool,
    /// `PRESENCE` messages of its channels (`presence=1`).
    pub presence: bool,
    /// Per-client limits count this key (the user, or the client's address).
    pub client: String,
}

/// A comma-separated list, trimmed, without empty items.
pub fn split_list(v: Option<&str>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}
