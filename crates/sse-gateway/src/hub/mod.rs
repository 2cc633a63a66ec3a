//! The hub: one upstream subscription per process, fanned out in-process to every connection
//! (`docs/architecture.md`, "The path of one event").
//!
//! # Layout
//! - [`fan_out`]: [`Hub`]: subscribe upstream, fan each delivery out, register connections.
//! - [`balance`]: how many streams an instance above its fair share sheds.
//! - `leave`: [`Hub::drain`] and [`Hub::shed`].
//! - [`roster`]: who is connected: [`Hub::connection_infos`], [`Hub::rosters`], and
//!   [`Hub::announce_presence`] to the connections that asked.
//! - [`registry`]: the connections, per-client counts, [`Registration`].
//! - `shard`: the fan-out of one edge thread's connections, on it.
//! - [`filter`]: what a connection wants ([`Filter`]).
//! - [`follows`]: subscriptions on demand ([`Following`]).
//! - [`event`]: [`HubEvent`] (encoded once, shared), [`Item`], and [`event::Span`]: a run of
//!   one channel's events shared by the connections that follow it alone, encoded once per
//!   framing.
//! - [`collapsed`]: latest-wins for lagging clients of state channels.
//! - [`queue`]: each connection's queue of items.

pub mod balance;
pub mod collapsed;
pub mod event;
pub mod fan_out;
pub mod filter;
pub mod follows;
mod leave;
pub mod queue;
pub mod registry;
pub mod roster;
pub(crate) mod shard;

pub use collapsed::Collapsed;
pub use event::{HubEvent, Item};
pub use fan_out::{Hub, HubSettings};
pub use filter::Filter;
pub use follows::Following;
pub use registry::{ConnInfo, Refused, Registration};
