//! Where notifications are kept: the [`Store`] trait, with [`MemoryStore`] (this process) and
//! [`RedisStore`] (next to the streams) side by side, and [`AnyStore`], the one that goes with
//! a bus. One conformance suite (`tests/conformance.rs`) runs against both.
//!
//! # Layout
//! - `contract`: [`Store`] and its guarantees, [`StoreError`].
//! - `memory`: [`MemoryStore`].
//! - `redis`: [`RedisStore`] and its scripts.
//! - `any`: [`AnyStore`].
//! - `push`: [`PushStore`], browsers' Web Push subscriptions.

pub mod any;
pub mod contract;
pub mod memory;
pub mod push;
pub mod redis;

pub use any::AnyStore;
pub use contract::{Store, StoreError};
pub use memory::MemoryStore;
pub use push::PushStore;
pub use redis::RedisStore;
