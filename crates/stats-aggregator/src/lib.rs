//! `stats-aggregator`: exact daily statistics in `rakuda:realtime:stats:<date>`.
//!
//! Reads every channel's stream in order and keeps one Redis hash per UTC day (fields in
//! [`day::FIELDS`], documented in `proto-schemas/README.md`), plus the gateways' figures folded
//! in as deltas. Exact across crashes and with several replicas: see [`aggregate`].
//!
//! # Layout
//! - [`config`]: [`AggregatorConfig`] and its variable names (`docs/reference.md`, "Configuration").
//! - [`day`]: what a run of entries adds to its day (the schema's fields and days re-exported).
//! - [`store`]: the hashes in Redis (Lua scripts) or in this process (memory bus).
//! - [`aggregate`]: the channel tasks, leases, and the gateway task.
//! - [`fold`]: the gateways' counters as deltas against their baselines.
//! - [`metrics`]: lag, events, errors.
//! - [`report`]: the `report` command's table.
//!
//! # Run
//! `REDIS_URL=redis://127.0.0.1:6379 stats-aggregator` (metrics on `HTTP_ADDR`, default
//! `0.0.0.0:9102`); `stats-aggregator report --date 2026-11-23` prints a day.

pub mod aggregate;
pub mod config;
pub mod day;
pub mod fold;
pub mod metrics;
pub mod report;
pub mod store;

use std::net::SocketAddr;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use tokio_util::sync::CancellationToken;

pub use aggregate::Aggregator;
pub use config::{AggregatorConfig, ENV_ALIASES};
pub use stats_schema::{daily, range, RangeError, MAX_RANGE_DAYS};
pub use store::{Store, StoreError};

/// The service: connect, aggregate, serve `/metrics`, `/healthz`, `/readyz` until `shutdown`.
pub async fn run(config: AggregatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = event_bus::connect(config.bus.clone()).await?;
    let store = Store::for_bus(&bus);
    let addr: SocketAddr = config.http_addr.parse()?;
    let aggregator = Aggregator::new(bus, store, config);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "stats-aggregator listening");
    let work = tokio::spawn(aggregator.clone().run(shutdown.clone()));
    service_kit::http::serve(listener, router(aggregator), shutdown.clone()).await?;
    work.await?;
    tracing::info!("stats-aggregator stopped");
    Ok(())
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(aggregator: Aggregator) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(a): State<Aggregator>| async move { a.metrics().render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(a): State<Aggregator>| async move {
                if a.ready() {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "stats store not reachable").into_response()
                }
            }),
        )
        .with_state(aggregator)
}
