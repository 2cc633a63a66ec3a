//! Cluster figures: each gateway writes its live figures to `rakuda:realtime:gateway:<instance>`
//! (a hash that expires unless refreshed) on a heartbeat, and `/api/realtime/stats` adds up
//! every instance's. Counters are cumulative since the instance started and the delivery
//! latency is kept as histogram buckets, so readers (this endpoint, the stats-aggregator)
//! merge buckets for percentiles instead of averaging averages.

use std::time::Duration;

use event_bus::{Bus, Timestamp};
use prometheus::core::Collector;
use serde_json::{json, Map, Value};
use stats_schema::{figures::Counters, latency::Buckets, GatewayFigures};
use tokio_util::sync::CancellationToken;

use crate::{error::ApiError, AppState};

/// The presence kind: keys are `<prefix>gateway:<instance>`.
pub use stats_schema::keys::GATEWAY_KIND as KIND;

/// A counter summed over its labels.
fn total(c: &prometheus::IntCounterVec) -> u64 {
    c.collect()
        .iter()
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum()
}

/// This instance's figures now.
pub fn current(state: &AppState, started_at: &str) -> GatewayFigures {
    let m = state.metrics();
    let mut f = GatewayFigures {
        instance: state.config().instance_id.clone(),
        started_at: started_at.to_owned(),
        updated_at: Timestamp::now().to_string(),
        connections: state.hub().connections() as u64,
        upstream_up: m.upstream_up.get() == 1,
        counters: Counters {
            connections_total: total(&m.connections_total),
            reconnects_total: m.reconnects_with_cursor.get(),
            delivered_total: total(&m.events_delivered),
            slow_consumer_disconnects_total: m.slow_consumer_disconnects.get(),
            groups_coalesced_total: m.groups_coalesced.get(),
            resyncs_total: m.resyncs.get(),
        },
        ..Default::default()
    };
    for family in m.delivery_latency.collect() {
        for metric in family.get_metric() {
            let h = metric.get_histogram();
            f.latency = Buckets(
                h.get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect(),
            );
            f.latency_count = h.get_sample_count();
            f.latency_sum_seconds = h.get_sample_sum();
        }
    }
    f
}

/// Refreshes this instance's figures every `interval` (they expire after three missed beats);
/// withdraws them when draining starts, so the cluster total drops at once.
pub async fn heartbeat(state: AppState, interval: Duration, stop: CancellationToken) {
    let started_at = Timestamp::now().to_string();
    let instance = state.config().instance_id.clone();
    let mut tick = tokio::time::interval(interval);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let f = current(&state, &started_at).to_map();
        match state.bus().announce(KIND, &instance, &f, interval * 3).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "could not write this gateway's figures; retrying each beat");
            }
            Err(_) => {}
        }
    }
    if let Err(e) = state.bus().withdraw(KIND, &instance).await {
        tracing::debug!(error = %e, "could not withdraw figures; they expire by themselves");
    }
}

fn summary(figures: &[GatewayFigures]) -> Map<String, Value> {
    let sum = |k: fn(&GatewayFigures) -> u64| figures.iter().map(k).sum::<u64>();
    let count = sum(|f| f.latency_count);
    let b = Buckets::merge(figures.iter().map(|f| f.latency.clone()));
    let mut m = Map::new();
    m.insert("connections".into(), json!(sum(|f| f.connections)));
    m.insert("connections_total".into(), json!(sum(|f| f.counters.connections_total)));
    m.insert("reconnects".into(), json!(sum(|f| f.counters.reconnects_total)));
    m.insert("delivered".into(), json!(sum(|f| f.counters.delivered_total)));
    m.insert(
        "slow_consumer_disconnects".into(),
        json!(sum(|f| f.counters.slow_consumer_disconnects_total)),
    );
    m.insert(
        "groups_coalesced".into(),
        json!(sum(|f| f.counters.groups_coalesced_total)),
    );
    m.insert("latency_p50_ms".into(), json!(b.quantile_ms(count, 0.5)));
    m.insert("latency_p99_ms".into(), json!(b.quantile_ms(count, 0.99)));
    m
}

/// `?date=YYYY-MM-DD` of `/api/realtime/stats`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateQuery {
    date: Option<String>,
}

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` of `/api/realtime/stats/range`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

fn query<T: serde::de::DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query string: {e}")))
}

fn date_param(name: &str, value: Option<&str>) -> Result<Option<chrono::NaiveDate>, ApiError> {
    value
        .map(|v| {
            stats_schema::time::parse_day(v).map_err(|e| ApiError::bad_request("invalid_date", format!("{name}: {e}")))
        })
        .transpose()
}

fn store_unavailable(e: stats_schema::ReadError) -> ApiError {
    tracing::warn!(error = %e, "daily statistics unavailable");
    ApiError::unavailable(
        "stats_unavailable",
        "the daily statistics cannot be read now; try again",
        2,
    )
}

/// `GET /api/realtime/stats/range?from=&to=`: the daily statistics of each day and their sum.
pub async fn range(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: axum::http::Uri,
) -> Result<axum::Json<Value>, ApiError> {
    let q: RangeQuery = query(&uri)?;
    let from = date_param("from", q.from.as_deref())?
        .ok_or_else(|| ApiError::bad_request("invalid_date", "from: required (YYYY-MM-DD)"))?;
    let to = date_param("to", q.to.as_deref())?
        .ok_or_else(|| ApiError::bad_request("invalid_date", "to: required (YYYY-MM-DD)"))?;
    match stats_schema::range(state.stats_store(), from, to).await {
        Ok(v) => Ok(axum::Json(v)),
        Err(stats_schema::RangeError::Invalid(m)) => Err(ApiError::bad_request("invalid_range", m)),
        Err(stats_schema::RangeError::Read(e)) => Err(store_unavailable(e)),
    }
}

/// `GET /api/realtime/stats[?date=YYYY-MM-DD]`: this instance, every live instance, their
/// total, and the daily statistics of `date` (default: today, UTC). A store that cannot be read
/// leaves `daily` null rather than hiding the live figures.
pub async fn stats(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: axum::http::Uri,
) -> Result<axum::Json<Value>, ApiError> {
    let q: DateQuery = query(&uri)?;
    let day = date_param("date", q.date.as_deref())?.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let daily = match stats_schema::daily(state.stats_store(), day).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "daily statistics unavailable");
            Value::Null
        }
    };
    let me = current(&state, "");
    let (mut roster, cluster) = match state.bus().roster(KIND).await {
        Ok(r) => (r, "ok"),
        Err(e) => {
            tracing::warn!(error = %e, "cluster figures unavailable");
            (Vec::new(), "unavailable")
        }
    };
    // This instance from its live figures, not its last heartbeat.
    let own = &state.config().instance_id;
    let mut roster: Vec<(String, GatewayFigures)> = roster
        .drain(..)
        .filter(|(name, _)| name != own)
        .map(|(name, f)| (name, GatewayFigures::from_map(&f)))
        .collect();
    roster.push((own.clone(), me));
    roster.sort_by(|a, b| a.0.cmp(&b.0));
    let instances: Vec<Value> = roster
        .iter()
        .map(|(name, f)| {
            let mut m = summary(std::slice::from_ref(f));
            m.insert("instance".into(), json!(name));
            m.insert("upstream_up".into(), json!(f.upstream_up));
            m.insert("updated_at".into(), json!(f.updated_at));
            Value::Object(m)
        })
        .collect();
    let all: Vec<GatewayFigures> = roster.into_iter().map(|(_, f)| f).collect();
    let mut total = summary(&all);
    total.insert("instances".into(), json!(all.len()));
    Ok(axum::Json(json!({
        "instance": own,
        "timestamp": Timestamp::now(),
        "cluster": cluster,
        "instances": instances,
        "total": total,
        "daily": daily,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_add_up_with_merged_percentiles() {
        let f = |connections, fast, slow| GatewayFigures {
            connections,
            latency: Buckets(vec![(0.001, fast), (1.0, fast + slow)]),
            latency_count: fast + slow,
            ..Default::default()
        };
        let s = summary(&[f(2, 99, 0), f(3, 0, 1)]);
        assert_eq!(s["connections"], json!(5));
        assert_eq!(s["latency_p50_ms"], json!(1.0));
        assert_eq!(s["latency_p99_ms"], json!(1.0));
        assert_eq!(summary(&[f(1, 50, 50)])["latency_p99_ms"], json!(1000.0));
        assert_eq!(summary(&[])["latency_p50_ms"], Value::Null);
    }
}
