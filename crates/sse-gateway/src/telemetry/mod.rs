//! What the gateway tells about itself: Prometheus metrics, and its figures in Redis on a
//! heartbeat (read back by `/api/realtime/stats` and the stats-aggregator).
//!
//! # Layout
//! - [`metrics`]: the Prometheus metrics.
//! - [`figures`]: this instance's figures, written on a heartbeat.
//! - [`transport`]: [`transport::Transport`], the label of how a connection's events travel.

pub mod figures;
pub mod metrics;
pub mod transport;
