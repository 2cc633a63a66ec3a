//! [`AnyBus`]: the backend chosen in one place ([`connect`]) from the configuration; the only
//! module that sees both backends.

use crate::{
    bus::{Broker, EntityState, Figures, Presence, Replay},
    config::BusConfig,
    cursor::Cursor,
    envelope::{EventId, NewEvent},
    error::BusError,
    memory::MemoryBus,
    name::Channel,
    publish::{Guard, Guarded, Published},
    redis::RedisBus,
    stats::BusStats,
    subscription::{Health, Subscription},
};

/// The backend, chosen in one place ([`connect`]) from the configuration.
#[derive(Clone, Debug)]
pub enum AnyBus {
    /// In-process.
    Memory(MemoryBus),
    /// Redis or Redis Cluster.
    Redis(RedisBus),
}

/// Opens the bus the configuration asks for: Redis when `redis_url` is set, memory otherwise.
pub async fn connect(config: BusConfig) -> Result<AnyBus, BusError> {
    config.validate()?;
    Ok(match config.redis_url.clone() {
        Some(_) => AnyBus::Redis(RedisBus::connect(config).await?),
        None => AnyBus::Memory(MemoryBus::new(config)?),
    })
}

impl AnyBus {
    /// The configuration this bus was opened with.
    pub fn config(&self) -> &BusConfig {
        match self {
            AnyBus::Memory(b) => b.config(),
            AnyBus::Redis(b) => b.config(),
        }
    }
}

impl Broker for AnyBus {
    async fn publish(&self, channel: &Channel, event: NewEvent) -> Result<Published, BusError> {
        match self {
            AnyBus::Memory(b) => b.publish(channel, event).await,
            AnyBus::Redis(b) => b.publish(channel, event).await,
        }
    }

    async fn publish_batch(&self, events: Vec<(Channel, NewEvent)>) -> Result<Vec<Published>, BusError> {
        match self {
            AnyBus::Memory(b) => b.publish_batch(events).await,
            AnyBus::Redis(b) => b.publish_batch(events).await,
        }
    }

    async fn subscribe(&self, channels: &[Channel], from: Option<&Cursor>) -> Result<Subscription, BusError> {
        match self {
            AnyBus::Memory(b) => b.subscribe(channels, from).await,
            AnyBus::Redis(b) => b.subscribe(channels, from).await,
        }
    }

    async fn replay(&self, channel: &Channel, after: EventId, limit: usize) -> Result<Replay, BusError> {
        match self {
            AnyBus::Memory(b) => b.replay(channel, after, limit).await,
            AnyBus::Redis(b) => b.replay(channel, after, limit).await,
        }
    }

    async fn head(&self, channels: &[Channel]) -> Result<Cursor, BusError> {
        match self {
            AnyBus::Memory(b) => b.head(channels).await,
            AnyBus::Redis(b) => b.head(channels).await,
        }
    }

    async fn published_with(&self, channel: &Channel, idempotency_key: &str) -> Result<Option<EventId>, BusError> {
        match self {
            AnyBus::Memory(b) => b.published_with(channel, idempotency_key).await,
            AnyBus::Redis(b) => b.published_with(channel, idempotency_key).await,
        }
    }

    fn health(&self) -> Health {
        match self {
            AnyBus::Memory(b) => b.health(),
            AnyBus::Redis(b) => b.health(),
        }
    }

    fn stats(&self) -> &BusStats {
        match self {
            AnyBus::Memory(b) => b.stats(),
            AnyBus::Redis(b) => b.stats(),
        }
    }
}

impl Presence for AnyBus {
    async fn announce(
        &self,
        kind: &str,
        instance: &str,
        figures: &Figures,
        ttl: std::time::Duration,
    ) -> Result<(), BusError> {
        match self {
            AnyBus::Memory(b) => b.announce(kind, instance, figures, ttl).await,
            AnyBus::Redis(b) => b.announce(kind, instance, figures, ttl).await,
        }
    }

    async fn withdraw(&self, kind: &str, instance: &str) -> Result<(), BusError> {
        match self {
            AnyBus::Memory(b) => b.withdraw(kind, instance).await,
            AnyBus::Redis(b) => b.withdraw(kind, instance).await,
        }
    }

    async fn roster(&self, kind: &str) -> Result<Vec<(String, Figures)>, BusError> {
        match self {
            AnyBus::Memory(b) => b.roster(kind).await,
            AnyBus::Redis(b) => b.roster(kind).await,
        }
    }
}

impl EntityState for AnyBus {
    async fn publish_guarded(&self, channel: &Channel, event: NewEvent, guard: Guard) -> Result<Guarded, BusError> {
        match self {
            AnyBus::Memory(b) => b.publish_guarded(channel, event, guard).await,
            AnyBus::Redis(b) => b.publish_guarded(channel, event, guard).await,
        }
    }

    async fn set_state(&self, channel: &Channel, guard: Guard) -> Result<Guarded, BusError> {
        match self {
            AnyBus::Memory(b) => b.set_state(channel, guard).await,
            AnyBus::Redis(b) => b.set_state(channel, guard).await,
        }
    }

    async fn state(&self, channel: &Channel, entity: &str) -> Result<Option<String>, BusError> {
        match self {
            AnyBus::Memory(b) => b.state(channel, entity).await,
            AnyBus::Redis(b) => b.state(channel, entity).await,
        }
    }
}
