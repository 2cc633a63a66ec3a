//! What every store hands back: outbox entries, and its error.

use std::collections::HashMap;

/// A store call failed.
#[derive(Debug, thiserror::Error)]
#[error("sinks store: {0}")]
pub struct StoreError(pub String);

/// One outbox entry: its stream id and fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The stream entry id.
    pub id: String,
    /// Its fields.
    pub fields: HashMap<String, String>,
}

/// What a deliverer looks at before each delivery, read together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Peek {
    /// Deliveries waiting.
    pub backlog: u64,
    /// Why the destination is disabled, if it is.
    pub disabled: Option<String>,
    /// Until when (Unix ms) it backs off, if it was told to.
    pub backoff: Option<u64>,
    /// The oldest delivery waiting.
    pub oldest: Option<Entry>,
}
