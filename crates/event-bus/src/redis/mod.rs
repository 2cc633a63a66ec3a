//! The Redis backend (fred), for one Redis or a Redis Cluster.
//!
//! - Publish: one Lua script per channel ([`publish.lua`](./publish.lua)) stores the events with
//!   `XADD`, sets their idempotency keys and `PUBLISH`es each envelope, atomically. Every key it
//!   touches carries the `{<channel>}` hash tag, so it runs on Cluster unchanged.
//! - Subscribe: the stream is the only source of delivery (`XREAD BLOCK`), so replay and live
//!   are one read position and there is no seam to get wrong. Cluster forbids one `XREAD` over
//!   keys of different slots, so there is one reader per hash slot ([`reader`]).
//! - Node interop: the pub/sub channel is watched for plain `PUBLISH`es without an `id`, which
//!   are stored in the stream exactly once however many subscribers saw them ([`adopt`]).

//!
//! # Layout
//! - [`connection`]: [`RedisBus`], its clients, the script calls, the stream state.
//! - [`ops`]: the [`crate::Bus`] operations.
//! - [`reader`]: the per-slot readers of subscriptions.
//! - [`adopt`]: Node-style announcements stored once.
//! - [`value`]: Redis replies as the bus's types.
//! - [`script`]: [`LuaScript`], `EVALSHA` with an `EVAL` fallback.

mod adopt;
mod connection;
mod ops;
mod reader;
mod script;
pub(crate) mod value;

pub use connection::RedisBus;
pub use script::LuaScript;
