//! Counters the bus keeps, for a service to export as metrics, and the log-once rule for
//! malformed input.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Kinds of malformed input the bus skips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// Not JSON at all.
    NotJson,
    /// JSON, but not an envelope (a field missing or of the wrong shape).
    NotEnvelope,
    /// An envelope whose type the channel does not allow.
    UnknownType,
    /// A stream entry without the envelope field, or an id that is not a stream id.
    BadEntry,
}

impl MalformedKind {
    /// Every kind, in a fixed order.
    pub const ALL: [MalformedKind; 4] = [
        MalformedKind::NotJson,
        MalformedKind::NotEnvelope,
        MalformedKind::UnknownType,
        MalformedKind::BadEntry,
    ];

    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            MalformedKind::NotJson => "not_json",
            MalformedKind::NotEnvelope => "not_envelope",
            MalformedKind::UnknownType => "unknown_type",
            MalformedKind::BadEntry => "bad_entry",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one bus handle (shared by its clones and subscriptions).
#[derive(Debug, Default)]
pub struct BusStats {
    published: AtomicU64,
    duplicates: AtomicU64,
    adopted: AtomicU64,
    delivered: AtomicU64,
    resyncs: AtomicU64,
    reconnects: AtomicU64,
    lagged_plain_publishes: AtomicU64,
    gaps_filled: AtomicU64,
    resubscribes: AtomicU64,
    malformed: [AtomicU64; 4],
    malformed_logged: [AtomicBool; 4],
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Events stored by `publish`.
    pub published: u64,
    /// Publishes suppressed by their idempotency key.
    pub duplicates: u64,
    /// Plain Node-style publishes this process stored in a stream.
    pub adopted: u64,
    /// Events handed to subscribers.
    pub delivered: u64,
    /// Resync notices handed to subscribers.
    pub resyncs: u64,
    /// Times a subscription's Redis reader reconnected.
    pub reconnects: u64,
    /// Pub/sub messages a subscription could not keep up with: the announcements among them
    /// are read from the stream instead; plain Node-style publishes are lost, as pub/sub is.
    pub lagged_plain_publishes: u64,
    /// Times a subscription read a stream to fill a gap in the announcements (a missed or
    /// unannounced event, a lost or lagging pub/sub connection, the tail check).
    pub gaps_filled: u64,
    /// Times a subscription subscribed a shard channel again because its announcements were
    /// missing (its slot moved to another master, or an announcement was lost).
    pub resubscribes: u64,
    /// Malformed inputs skipped, by kind (in [`MalformedKind::ALL`] order).
    pub malformed: [u64; 4],
}

impl StatsSnapshot {
    /// Malformed inputs of one kind.
    pub fn malformed(&self, kind: MalformedKind) -> u64 {
        self.malformed[kind.index()]
    }

    /// Malformed inputs of every kind.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }
}

impl BusStats {
    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            published: self.published.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            adopted: self.adopted.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            resyncs: self.resyncs.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            lagged_plain_publishes: self.lagged_plain_publishes.load(Relaxed),
            gaps_filled: self.gaps_filled.load(Relaxed),
            resubscribes: self.resubscribes.load(Relaxed),
            malformed: std::array::from_fn(|i| self.malformed[i].load(Relaxed)),
        }
    }

    pub(crate) fn published(&self, n: u64) {
        self.published.fetch_add(n, Relaxed);
    }
    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }
    pub(crate) fn adopted(&self) {
        self.adopted.fetch_add(1, Relaxed);
    }
    pub(crate) fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Relaxed);
    }
    pub(crate) fn resync(&self) {
        self.resyncs.fetch_add(1, Relaxed);
    }
    pub(crate) fn reconnect(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    pub(crate) fn gap_filled(&self) {
        self.gaps_filled.fetch_add(1, Relaxed);
    }
    pub(crate) fn resubscribed(&self) {
        self.resubscribes.fetch_add(1, Relaxed);
    }
    pub(crate) fn lagged(&self, n: u64) {
        self.lagged_plain_publishes.fetch_add(n, Relaxed);
    }

    /// Counts a malformed input; logs the first of each kind as a warning, later ones at debug,
    /// so a producer spewing garbage cannot flood the log.
    pub(crate) fn malformed(&self, kind: MalformedKind, source: &str, detail: &str) {
        self.malformed[kind.index()].fetch_add(1, Relaxed);
        if !self.malformed_logged[kind.index()].swap(true, Relaxed) {
            tracing::warn!(
                kind = kind.as_str(),
                source,
                detail,
                "skipped malformed event (logged once per kind; see the malformed counter for more)"
            );
        } else {
            tracing::debug!(kind = kind.as_str(), source, detail, "skipped malformed event");
        }
    }
}
