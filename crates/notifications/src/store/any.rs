//! The store that goes with a bus.

use std::time::Duration;

use event_bus::AnyBus;

use super::{
    contract::{Store, StoreError},
    memory::MemoryStore,
    redis::RedisStore,
};
use crate::model::{Created, Marked, Page, PageQuery, Stored};

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
