//! What every store takes and hands back: deliveries to queue, outbox entries, what a
//! deliverer looks at, and the store's error.

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

/// What a deliverer looks at before each delivery, read (and taken) together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Peek {
    /// Deliveries waiting.
    pub backlog: u64,
    /// Why the destination is disabled, if it is.
    pub disabled: Option<String>,
    /// Until when (Unix ms) it backs off, if it was told to.
    pub backoff: Option<u64>,
    /// The oldest delivery waiting: handed out only when the destination is enabled, not
    /// backing off, and had a token.
    pub oldest: Option<Entry>,
    /// How long to wait for a token (ms), when the bucket was empty.
    pub wait_ms: u64,
    /// The attempts at `oldest`, this one included.
    pub attempts: u64,
}

/// How far an outbox may grow (`delivery.max_backlog`, `delivery.max_age_secs`). Each
/// queueing moves the oldest deliveries past either bound to the dead letters (where an
/// operator sees and can replay them), so a destination that is disabled, or slower than its
/// events, holds a bounded outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Deliveries waiting, at most.
    pub max_backlog: u64,
    /// How long a delivery may wait, in ms.
    pub max_age_ms: u64,
}

/// What queueing one delivery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// It was queued now (not before: a re-read queues nothing twice).
    pub new: bool,
    /// Deliveries moved from the outbox to the dead letters to keep its [`Bound`].
    pub dead: u64,
}

/// One delivery to queue.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Where.
    pub destination: String,
    /// Its (event, destination) key.
    pub key: String,
    /// The outbox entry's fields.
    pub fields: Vec<(&'static str, String)>,
}
