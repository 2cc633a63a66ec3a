//! The Redis backend (fred), for one Redis or a Redis Cluster.
//!
//! - Publish: one Lua script per channel ([`publish.lua`](./publish.lua)) stores the events with
//!   `XADD`, sets their idempotency keys and `SPUBLISH`es each envelope on the channel's shard
//!   channel, atomically. Every key it touches, and the shard channel, carry the `{<channel>}`
//!   hash tag, so it runs on Cluster unchanged and only the slot's master announces.
//! - Subscribe: each announcement names the id before it, so a subscription delivers from
//!   sharded pub/sub while the announcements follow on from its position, and reads the stream (one
//!   position for replay and live, so no seam) only to replay or to fill a gap ([`live`]).
//! - Node interop: plain `PUBLISH`es without an `id` are stored in the stream exactly once
//!   however many subscribers saw them ([`adopt`]), then read from it like a missed
//!   announcement.

//!
//! # Layout
//! - [`connection`]: [`RedisBus`], its clients, the script calls, the stream state.
//! - [`ops`]: the [`crate::Bus`] operations.
//! - [`commit`]: publishes of one channel that arrive together share one script call
//!   ([`lane`]: its state).
//! - [`live`]: a subscription's task: announcements, gaps, the tail check.
//! - [`followed`]: what a subscription follows; the rotation of the tail check.
//! - [`reader`]: reading a stream to fill a gap.
//! - [`adopt`]: Node-style announcements stored once.
//! - [`value`]: Redis replies as the bus's types.
//! - [`script`]: [`LuaScript`], `EVALSHA` with an `EVAL` fallback.

mod adopt;
mod commit;
mod connection;
mod followed;
mod heard;
mod lane;
mod live;
mod ops;
mod reader;
mod script;
pub(crate) mod value;

pub use connection::RedisBus;
pub use script::LuaScript;
