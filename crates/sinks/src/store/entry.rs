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
