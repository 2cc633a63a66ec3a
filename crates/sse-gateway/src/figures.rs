//! Cluster figures: each gateway writes its live figures to `rakuda:realtime:gateway:<instance>`
//! (a hash that expires unless refreshed) on a heartbeat, and `/api/realtime/stats` adds up
//! every instance's. Counters are cumulative since the instance started and the delivery
//! latency is kept as histogram buckets, so readers (this endpoint, the stats-aggregator)
//! merge buckets for percentiles instead of averaging averages.

use std::time::Duration;

use event_bus::{Bus, Figures, Timestamp};
use prometheus::core::Collector;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::{error::ApiError, AppState};

/// The presence kind: keys are `<prefix>gateway:<instance>`.
pub const KIND: &str = "gateway";

/// A counter summed over its labels.
fn total(c: &prometheus::IntCounterVec) -> u64 {
    c.collect()
        .iter()
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum()
}

/// This instance's figures now.
pub fn current(state: &AppState, started_at: &str) -> Figures {
    let m = state.metrics();
    let delivered = total(&m.events_delivered);
    let mut f = Figures::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_owned(), v);
    };
    put("instance", state.config().instance_id.clone());
    put("started_at", started_at.to_owned());
    put("updated_at", Timestamp::now().to_string());
    put("connections", state.hub().connections().to_string());
    put("connections_total", total(&m.connections_total).to_string());
    put("reconnects_total", m.reconnects_with_cursor.get().to_string());
    put("delivered_total", delivered.to_string());
    put(
        "slow_consumer_disconnects_total",
        m.slow_consumer_disconnects.get().to_string(),
    );
    put("groups_coalesced_total", m.groups_coalesced.get().to_string());
    put("resyncs_total", m.resyncs.get().to_string());
    put("upstream_up", m.upstream_up.get().to_string());
    for family in m.delivery_latency.collect() {
        for metric in family.get_metric() {
            let h = metric.get_histogram();
            for b in h.get_bucket() {
                put(
                    &format!("latency_le_{}", b.upper_bound()),
                    b.cumulative_count().to_string(),
                );
            }
            put("latency_count", h.get_sample_count().to_string());
            put("latency_sum_seconds", format!("{:.6}", h.get_sample_sum()));
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
        let f = current(&state, &started_at);
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

fn num(f: &Figures, k: &str) -> u64 {
    f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Latency buckets (upper bound in seconds, cumulative count), merged over instances.
fn buckets<'a>(all: impl Iterator<Item = &'a Figures>) -> Vec<(f64, u64)> {
    let mut merged: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
    for f in all {
        for (k, v) in f {
            if let Some(bound) = k.strip_prefix("latency_le_") {
                if let Ok(b) = bound.parse::<f64>() {
                    let e = merged.entry(bound.to_owned()).or_insert((b, 0));
                    e.1 += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    let mut v: Vec<_> = merged.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

fn summary(figures: &[&Figures]) -> Map<String, Value> {
    let sum = |k: &str| figures.iter().map(|f| num(f, k)).sum::<u64>();
    let count = sum("latency_count");
    let b = buckets(figures.iter().copied());
    let mut m = Map::new();
    m.insert("connections".into(), json!(sum("connections")));
    m.insert("connections_total".into(), json!(sum("connections_total")));
    m.insert("reconnects".into(), json!(sum("reconnects_total")));
    m.insert("delivered".into(), json!(sum("delivered_total")));
    m.insert(
        "slow_consumer_disconnects".into(),
        json!(sum("slow_consumer_disconnects_total")),
    );
    m.insert("groups_coalesced".into(), json!(sum("groups_coalesced_total")));
    m.insert(
        "latency_p50_ms".into(),
        json!(stats_aggregator::day::quantile_ms(&b, count, 0.5)),
    );
    m.insert(
        "latency_p99_ms".into(),
        json!(stats_aggregator::day::quantile_ms(&b, count, 0.99)),
    );
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
            stats_aggregator::day::parse_day(v)
                .map_err(|e| ApiError::bad_request("invalid_date", format!("{name}: {e}")))
        })
        .transpose()
}

fn store_unavailable(e: stats_aggregator::StoreError) -> ApiError {
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
    match stats_aggregator::range(state.stats_store(), from, to).await {
        Ok(v) => Ok(axum::Json(v)),
        Err(stats_aggregator::RangeError::Invalid(m)) => Err(ApiError::bad_request("invalid_range", m)),
        Err(stats_aggregator::RangeError::Store(e)) => Err(store_unavailable(e)),
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
    let daily = match stats_aggregator::daily(state.stats_store(), day).await {
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
    roster.retain(|(name, _)| name != own);
    roster.push((own.clone(), me.clone()));
    roster.sort_by(|a, b| a.0.cmp(&b.0));
    let instances: Vec<Value> = roster
        .iter()
        .map(|(name, f)| {
            let mut m = summary(&[f]);
            m.insert("instance".into(), json!(name));
            m.insert("upstream_up".into(), json!(num(f, "upstream_up") == 1));
            m.insert("updated_at".into(), json!(f.get("updated_at")));
            Value::Object(m)
        })
        .collect();
    let all: Vec<&Figures> = roster.iter().map(|(_, f)| f).collect();
    let mut total = summary(&all);
    total.insert("instances".into(), json!(roster.len()));
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
    fn percentiles_come_from_merged_buckets() {
        let f =
            |pairs: &[(&str, u64)]| -> Figures { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        // Instance a: 99 fast deliveries; instance b: 1 slow one. Averages of p99s would say
        // "half slow"; merged buckets say p50 fast, p99 fast, only the max slow.
        let a = f(&[("latency_le_0.001", 99), ("latency_le_1", 99), ("latency_count", 99)]);
        let b = f(&[("latency_le_0.001", 0), ("latency_le_1", 1), ("latency_count", 1)]);
        let s = summary(&[&a, &b]);
        assert_eq!(s["latency_p50_ms"], json!(1.0));
        assert_eq!(s["latency_p99_ms"], json!(1.0));
        let c = f(&[("latency_le_0.001", 50), ("latency_le_1", 100), ("latency_count", 100)]);
        assert_eq!(summary(&[&c])["latency_p99_ms"], json!(1000.0));
        assert_eq!(summary(&[])["latency_p50_ms"], Value::Null);
    }
}
