//! The HTTP endpoints other than the streams: thin handlers over the layers below
//! (`docs/reference.md`, "Endpoints").
//!
//! # Layout
//! - [`auth`]: the authentication layer of the router; `GET /api/dev/token`.
//! - [`body`]: reading a body within its limit; the per-caller publishing rate limit.
//! - [`status`]: `/healthz`, `/readyz`, status, connections, `/metrics`.
//! - [`publish`]: publish and test events.
//! - [`notifications`]: the notification endpoints, over [`notifications::Notifications`].
//! - [`acks`]: who saw an event and who acknowledged it.
//! - [`presence`]: who is connected to a channel, across every gateway.
//! - [`push`]: Web Push subscriptions of the caller's browsers.
//! - [`sinks`]: the sinks' destinations and their state, read from Redis.
//! - [`stats`]: the cluster's figures and the daily statistics.

pub mod acks;
pub mod auth;
pub mod body;
pub mod notifications;
pub mod presence;
pub mod publish;
pub mod push;
pub mod sinks;
pub mod stats;
pub mod status;
