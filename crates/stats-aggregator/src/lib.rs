//! `stats-aggregator`: exact daily statistics in `rakuda:realtime:stats:<date>`.
//!
//! Reads every channel's stream in order and keeps one Redis hash per UTC day (fields in
//! [`day::FIELDS`], documented in `proto-schemas/README.md`), plus the gateways' figures folded
//! in as deltas. Exact across crashes and with several replicas: see [`aggregate`].
//!
//! # Layout
//! - [`config`]: [`AggregatorConfig`] and the CONTRACT §5 variable names.
//! - [`day`]: which day an entry belongs to, field names, tallies, the hash as JSON.
//! - [`store`]: the hashes in Redis (Lua scripts) or in this process (memory bus).
//! - [`aggregate`]: the channel tasks, leases, and the gateway fold.
//! - [`metrics`]: lag, events, errors.
//! - [`report`]: the `report` command's table.
//!
//! # Run
//! `REDIS_URL=redis://127.0.0.1:6379 stats-aggregator` (metrics on `HTTP_ADDR`, default
//! `0.0.0.0:9102`); `stats-aggregator report --date 2026-11-23` prints a day.

pub mod aggregate;
pub mod config;
pub mod day;
pub mod metrics;
pub mod report;
pub mod store;

use std::net::SocketAddr;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use chrono::NaiveDate;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

pub use aggregate::Aggregator;
pub use config::{AggregatorConfig, ENV_ALIASES};
pub use store::{Store, StoreError};

/// Longest span `/stats/range` answers, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// One day's statistics as JSON (`proto-schemas/daily-stats.schema.json`).
pub async fn daily(store: &Store, day: NaiveDate) -> Result<Value, StoreError> {
    Ok(day::daily_json(day, &store.read_day(day).await?))
}

/// Why a range cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// `from` after `to`, or too long a span.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Days `from..=to` and their totals (`proto-schemas/stats-range.schema.json`).
pub async fn range(store: &Store, from: NaiveDate, to: NaiveDate) -> Result<Value, RangeError> {
    if from > to {
        return Err(RangeError::Invalid(format!("from ({from}) is after to ({to})")));
    }
    let span = (to - from).num_days() + 1;
    if span > MAX_RANGE_DAYS {
        return Err(RangeError::Invalid(format!(
            "{span} days asked; at most {MAX_RANGE_DAYS} at once"
        )));
    }
    let mut days = Vec::new();
    let mut total = Map::new();
    let mut events = 0i64;
    let mut late = 0i64;
    let mut malformed = 0i64;
    for d in day::days(from, to) {
        let j = daily(store, d).await?;
        events += j["events"].as_i64().unwrap_or(0);
        late += j["late"].as_i64().unwrap_or(0);
        malformed += j["malformed"]["total"].as_i64().unwrap_or(0);
        for group in ["by_type", "by_channel", "by_action"] {
            let sums = total
                .entry(group)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("object");
            for (k, v) in j[group].as_object().into_iter().flatten() {
                let cur = sums.get(k).and_then(Value::as_i64).unwrap_or(0);
                sums.insert(k.clone(), json!(cur + v.as_i64().unwrap_or(0)));
            }
        }
        days.push(j);
    }
    total.insert("events".into(), json!(events));
    total.insert("late".into(), json!(late));
    total.insert("malformed".into(), json!(malformed));
    Ok(json!({
        "from": from.format("%Y-%m-%d").to_string(),
        "to": to.format("%Y-%m-%d").to_string(),
        "days": days,
        "total": total,
    }))
}

/// The service: connect, aggregate, serve `/metrics`, `/healthz`, `/readyz` until `shutdown`.
pub async fn run(config: AggregatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = event_bus::connect(config.bus.clone()).await?;
    let store = Store::for_bus(&bus);
    let addr: SocketAddr = config.http_addr.parse()?;
    let aggregator = Aggregator::new(bus, store, config);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "stats-aggregator listening");
    let work = tokio::spawn(aggregator.clone().run(shutdown.clone()));
    let stop = shutdown.clone();
    axum::serve(listener, router(aggregator))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
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
