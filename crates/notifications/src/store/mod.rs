//! Where notifications are kept: the [`Store`] trait, with [`MemoryStore`] (this process) and
//! [`RedisStore`] (next to the streams) side by side, and [`AnyStore`], the one that goes with
//! a bus. One conformance suite (`tests/conformance.rs`) runs against both.

mod memory;
mod redis;

use std::{future::Future, time::Duration};

use event_bus::AnyBus;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::model::{Created, Marked, Page, PageQuery, Stored};

/// The store failed (Redis unreachable, or an unexpected reply).
#[derive(Debug, thiserror::Error)]
#[error("notification store: {0}")]
pub struct StoreError(pub(crate) String);

/// A per-user notification store.
///
/// Guarantees, per user: each operation is atomic (a reader never sees half of a create or a
/// mark); order is creation order; at most `cap` notifications are kept (the oldest go first,
/// read or not); a create with an idempotency key already used within
/// [`crate::config::IDEMPOTENCY_SECS`] stores nothing and answers the first notification;
/// users never see each other's notifications.
pub trait Store: Send + Sync + 'static {
    /// Stores `n` for its user, keeping at most `cap`; pushes the user's expiry to `ttl` from
    /// now; a repeated `idem` key returns the first.
    fn create(
        &self,
        n: Stored,
        idem: Option<&str>,
        cap: usize,
        ttl: Duration,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// One page of `user`'s notifications, newest first (`None` if `q.before` is not one of
    /// the user's).
    fn list(&self, user: &str, q: PageQuery<'_>) -> impl Future<Output = Result<Option<Page>, StoreError>> + Send;

    /// Marks `id` read (all of the user's, for `None`).
    fn mark_read(&self, user: &str, id: Option<&str>) -> impl Future<Output = Result<Marked, StoreError>> + Send;
}

/// The store that goes with a bus: Redis for a Redis bus, this process otherwise.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// In this process.
    Memory(MemoryStore),
    /// In Redis.
    Redis(Box<RedisStore>),
}

impl AnyStore {
    /// The store for `bus`, sharing its Redis connection.
    pub fn for_bus(bus: &AnyBus) -> AnyStore {
        match bus {
            AnyBus::Memory(_) => AnyStore::Memory(MemoryStore::default()),
            AnyBus::Redis(b) => AnyStore::Redis(Box::new(RedisStore::new(
                b.client().clone(),
                bus.config().prefix.clone(),
            ))),
        }
    }
}

impl Store for AnyStore {
    async fn create(&self, n: Stored, idem: Option<&str>, cap: usize, ttl: Duration) -> Result<Created, StoreError> {
        match self {
            AnyStore::Memory(s) => s.create(n, idem, cap, ttl).await,
            AnyStore::Redis(s) => s.create(n, idem, cap, ttl).await,
        }
    }

    async fn list(&self, user: &str, q: PageQuery<'_>) -> Result<Option<Page>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.list(user, q).await,
            AnyStore::Redis(s) => s.list(user, q).await,
        }
    }

    async fn mark_read(&self, user: &str, id: Option<&str>) -> Result<Marked, StoreError> {
        match self {
            AnyStore::Memory(s) => s.mark_read(user, id).await,
            AnyStore::Redis(s) => s.mark_read(user, id).await,
        }
    }
}
