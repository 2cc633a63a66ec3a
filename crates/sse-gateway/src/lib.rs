//! `sse-gateway`: the stateless realtime edge. Many replicas run behind a load balancer with
//! Redis as the shared backplane; browsers connect with `EventSource` or a WebSocket.
//!
//! # Layout
//! Dependencies point one way, down this list (`docs/architecture.md`):
//! - [`server`]: accept, route by the first bytes, drain; [`run`], [`serve`].
//! - [`routes`]: the router, [`app`].
//! - [`http`]: thin handlers of the other endpoints (publish, status, notifications, stats).
//! - [`transport`]: SSE (router and lean paths) and WebSocket, each with its encoder.
//! - [`stream`]: one client's stream: open, replay/live seam, grouping, typed frames and end.
//! - [`hub`]: one upstream subscription per process, fanned out to every connection.
//! - [`app`]: [`AppState`], built then started.
//! - [`auth`]: JWT verification, token sources, principals.
//! - [`telemetry`]: Prometheus metrics, this instance's figures on a heartbeat.
//! - [`config`]: [`GatewayConfig`] and its variable names (`docs/reference.md`, "Configuration").
//! - [`dashboard`]: the operator's dashboard at `/` and the JS client module, compiled in.
//! - [`openapi`]: the OpenAPI 3.1 document of the HTTP API (`proto-schemas/` bundled in).
//! - [`error`]: JSON error answers with stable codes.
//! - [`limit`]: per-caller rate limits (token buckets).
//!
//! Below them: `event-bus` (the bus), `notifications` (per-user notifications), `stats-schema`
//! (the daily statistics as stored).
//!
//! # Run
//! `REDIS_URL=redis://127.0.0.1:6379 HTTP_ADDR=127.0.0.1:8080 sse-gateway`; without
//! `REDIS_URL` it runs on an in-process bus (one instance only, for development).

pub mod app;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod limit;
pub mod openapi;
pub mod presence;
pub mod routes;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod transport;

pub use app::AppState;
pub use config::{GatewayConfig, ENV_ALIASES};
pub use routes::app;
pub use server::{run, serve, serve_with, serve_with_stats, Extras};
