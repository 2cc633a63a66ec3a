//! The sinks' state: per destination an outbox of deliveries, markers that make queueing
//! idempotent, attempts, dead letters, a shared token bucket, a backoff and a disabled flag; per
//! channel the position read up to; leases. In Redis next to the streams ([`RedisStore`],
//! `docs/reference.md`, "Redis keys"), durable and shared by every replica; or in this process
//! ([`MemoryStore`], `make run` on the memory bus: one replica, gone at exit). Deliveries held
//! for escalation: [`Held`].

mod entry;
mod held;
mod memory;
mod redis;
mod redis_push;

use std::collections::HashSet;

pub use entry::{Bound, Enqueued, Entry, Peek, Queued, StoreError};
use event_bus::{Channel, EventId};
pub use held::{Held, Hold, MemoryHeld, MAX_DECISIONS};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// A lease this replica takes and keeps: one round trip when it is not held, then one a third
/// of its life after each renewal (not one per page or per delivery). Its holder is a token of
/// the taker's own (its instance and a random part), which fences what it does under the lease
/// ([`Store::finish`]).
#[derive(Debug)]
pub struct Lease {
    name: String,
    ttl_ms: u64,
    holder: String,
    renewed: Option<tokio::time::Instant>,
}

impl Lease {
    /// The lease `name` (`channel:<c>`, `dest:<d>`), `ttl_ms` long, held as `holder`.
    pub fn new(name: String, ttl_ms: u64, holder: String) -> Lease {
        Lease {
            name,
            ttl_ms,
            holder,
            renewed: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token it is held with.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How often it is renewed: a third of its life.
    pub fn renew_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ttl_ms / 3)
    }

    /// Whether this replica holds it now, taking or renewing it when due.
    pub async fn hold(&mut self, store: &Store) -> Result<bool, StoreError> {
        if self.renewed.is_some_and(|at| at.elapsed() < self.renew_every()) {
            return Ok(true);
        }
        // Timed from before the call: the lease runs from when Redis set it, at the latest.
        let at = tokio::time::Instant::now();
        let held = store.lease(&self.name, &self.holder, self.ttl_ms).await?;
        self.renewed = held.then_some(at);
        Ok(held)
    }

    /// Forgets that it is held (after a failure): the next `hold` asks Redis.
    pub fn forget(&mut self) {
        self.renewed = None;
    }
}

/// The store: in Redis, or in this process.
#[derive(Clone, Debug)]
pub enum Store {
    /// In Redis.
    Redis(Box<RedisStore>),
    /// In this process.
    Memory(MemoryStore),
}

impl Store {
    /// The deliveries held for escalation, next to the rest of the state.
    pub fn held(&self) -> Held {
        match self {
            Store::Redis(s) => Held::redis(s.client.clone(), s.prefix.clone()),
            Store::Memory(m) => Held::Memory(m.held()),
        }
    }
}

/// Each method of [`Store`], handed to the store it is.
macro_rules! delegate {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match self {
                        Store::Redis(s) => s.$name($($arg),*).await,
                        Store::Memory(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    /// Takes or renews lease `name` for `holder`; whether it is held now.
    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> bool;
    /// Where a channel was read up to; `None` the first time.
    fn position(&self, channel: &Channel) -> Option<EventId>;
    /// Moves a channel's position (forward only matters: a re-read is harmless).
    fn set_position(&self, channel: &Channel, id: EventId) -> ();
    /// Queues delivery `q` unless its key was queued before, and keeps its outbox within
    /// `bound` (the oldest past it go to the dead letters); what it did.
    fn enqueue(&self, q: &Queued, bound: Bound) -> Enqueued;
    /// [`Store::enqueue`] for each of `batch`, in order, in one round trip.
    fn enqueue_many(&self, batch: &[Queued], bound: Bound) -> Vec<Enqueued>;
    /// Moves a delivery to the dead letters, with why.
    fn dead_letter(&self, destination: &str, entry: &Entry, why: &str) -> ();
    /// The dead letters of `destination`, oldest first (at most `limit`).
    fn dead_letters(&self, destination: &str, limit: u64) -> Vec<Entry>;
    /// Queues the dead letters of `destination` again (their keys are kept, so receivers still
    /// take each once) and removes them from the dead letters; how many.
    fn replay(&self, destination: &str) -> usize;
    /// Sets `destination`'s backoff until `until_ms`.
    fn set_backoff(&self, destination: &str, until_ms: u64, now_ms: u64) -> ();
    /// Disables `destination` (until an operator enables it: `sinks enable <destination>`).
    fn disable(&self, destination: &str, why: &str) -> ();
    /// Enables `destination` again.
    fn enable(&self, destination: &str) -> ();
    /// Announces this replica's destinations, `(name, kind)`, for the dashboard.
    fn announce(&self, destinations: &[(&str, &str)]) -> ();
    /// Notes what `destination` last did, for the dashboard: accepted, or an error (Unix ms).
    fn note(&self, destination: &str, error: Option<&str>, now_ms: u64) -> ();
    /// `user`'s Web Push subscriptions (stored by the gateway).
    fn subscriptions(&self, user: &str) -> Vec<notifications::push::Subscription>;
    /// Deletes `user`'s subscription `id` (its push service said it is gone).
    fn unsubscribe(&self, user: &str, id: &str) -> ();
    /// The subscriptions delivery `key` of `destination` was taken by (or refused for good).
    fn pushed(&self, destination: &str, key: &str) -> HashSet<String>;
    /// Notes that subscription `id` took delivery `key`.
    fn mark_pushed(&self, destination: &str, key: &str, id: &str) -> ();
    /// Forgets the subscriptions of a finished delivery.
    fn forget_pushed(&self, destination: &str, key: &str) -> ();
    /// What `destination`'s deliverer does before each delivery, in one round trip: its
    /// backlog, disabled flag and backoff; then, if it may send, a token of its bucket (shared
    /// by every replica; `rate` per second, at most `burst`) and its oldest delivery, with the
    /// attempt counted.
    fn next(&self, destination: &str, rate: f64, burst: f64, now_ms: u64) -> Peek;
    /// A delivery was taken: off the outbox, and noted for the dashboard, in one round trip,
    /// if lease `lease` is still held by `holder` (fenced: atomically with the check); whether
    /// it was.
    fn finish(&self, destination: &str, entry: &Entry, now_ms: u64, lease: &str, holder: &str) -> bool;
    /// Counts an invalid answer (401/403/429) of `destination` in the window starting at
    /// `window_ms` (Unix ms), `len_ms` long; the count so far in it.
    fn count_invalid(&self, destination: &str, window_ms: u64, len_ms: u64) -> u64;
}
