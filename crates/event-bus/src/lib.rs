//! The rakuda realtime event bus: what worker processes link to emit events, and what the
//! gateway uses to follow them.
//!
//! Events are stored in one capped Redis stream per channel and announced on a shard channel
//! in the stream's hash slot (`SPUBLISH`; the Phase 27 pub/sub channel too with
//! `announce_plain`); subscribers read the streams, so they can resume from a
//! [`Cursor`] with nothing lost and nothing twice. The same [`Bus`] interface has an in-process
//! backend for a single process.
//!
//! # Layout
//! Dependencies point one way: the types, the trait, the rules, the backends, then `any`.
//! - `name`: [`Channel`] and [`EventType`], validated; [`InvalidName`].
//! - `trace`: [`Traceparent`], the W3C trace context an event carries from its cause.
//! - `envelope`: [`Envelope`], [`NewEvent`], [`EventId`], [`Payload`] (`docs/reference.md`, "Envelope").
//! - `channel`: the built-in channels and the Redis names, [`Keys`] (`docs/reference.md`, "Redis keys").
//! - `cursor`: [`Cursor`], one resume position over several channels, and its text form.
//! - `config`: [`BusConfig`], checked with errors that name the key.
//! - `streams`: a channel's streams (its partitions), where an event goes, and whether a
//!   cursor was written for another layout of them.
//! - `error`: [`BusError`], [`ConfigError`].
//! - `publish`: [`Published`]; guarded publishes, [`Guard`], [`Guarded`].
//! - `subscription`: [`Subscription`], [`Delivery`], [`Health`].
//! - `bus`: the roles, each a trait with its guarantees: the [`Broker`] (publish, subscribe,
//!   replay; a subscription's [`Follower`]), [`Presence`] (instances' figures) and
//!   [`EntityState`] (state moved with its events); [`Bus`] is all three. [`Replay`].
//! - `rules`: what both backends check, the gap rule, the RESYNC answer.
//! - `stats`: [`BusStats`], counters for metrics; malformed input is counted and logged once.
//! - `memory`: [`MemoryBus`], bounded ring buffers in process.
//! - `redis`: [`RedisBus`], streams + pub/sub on Redis or Redis Cluster, and Node interop.
//! - `any`: [`AnyBus`] and [`connect`]: the backend chosen from the configuration.
//!
//! # Use
//! ```no_run
//! use event_bus::{connect, Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload};
//! # async fn demo() -> Result<(), event_bus::BusError> {
//! let bus = connect(BusConfig { redis_url: Some("redis://127.0.0.1:6379".into()), ..Default::default() }).await?;
//! let event = NewEvent::new(EventType::ORDER_RECEIVED, Payload::new("ord_81", Action::Created))
//!     .with_idempotency_key("orders:job:81");
//! let published = bus.publish(&Channel::ORDERS, event).await?;
//! let mut sub = bus.subscribe(&[Channel::ORDERS], None).await?;
//! while let Some(delivery) = sub.next().await {
//!     println!("{delivery:?}");
//! }
//! # let _ = published; Ok(()) }
//! ```
//!
//! # Node interop
//! An event published the Phase 27 Node way, `PUBLISH rakuda:realtime:orders '<envelope
//! without id>'` with no stream entry, is stored in the stream by the subscribing processes,
//! exactly once however many there are, and then delivered and resumable like any other event.
//! See the `redis::adopt` module for how.

#![warn(missing_docs)]

mod any;
mod bus;
mod channel;
mod config;
mod cursor;
mod envelope;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod memory;
mod name;
mod publish;
mod redis;
mod rules;
mod stats;
mod streams;
mod subscription;
mod trace;

pub use any::{connect, AnyBus};
pub use bus::{Broker, Bus, EntityState, Figures, Presence, Replay};
pub use channel::{builtin_channels, Keys};
pub use config::{redact_url, BusConfig, ChannelSpec, Retention, MAX_PARTITIONS, PARTITION_EXPIRY};
pub use cursor::{Cursor, CursorError, MAX_CURSOR_LEN};
pub use envelope::MAX_PAYLOAD_ID;
pub use envelope::{Action, Envelope, EventId, InvalidEventId, NewEvent, Payload, SharedEnvelope, Timestamp};
pub use error::{BusError, ConfigError};
pub use memory::MemoryBus;
pub use name::{Channel, EventType, InvalidName};
pub use publish::{Guard, Guarded, Published};
pub use redis::{LuaScript, RedisBus};
pub use stats::{BusStats, MalformedKind, StatsSnapshot};
pub use subscription::{Delivery, Follower, Health, Subscription};
pub use trace::{BadTraceparent, Traceparent};
