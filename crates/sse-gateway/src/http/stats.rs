//! `GET /api/realtime/stats` (this instance, every live one, their total, and a day's
//! statistics) and `/api/realtime/stats/range`.

use axum::{extract::State, http::Uri, Extension, Json};
use event_bus::{Presence, Timestamp};
use serde_json::{json, Map, Value};
use stats_schema::{latency::Buckets, GatewayFigures};

use crate::{
    app::AppState,
    auth::principal::{Grant, Principal},
    error::ApiError,
    http::auth::caller,
    telemetry::figures::{current, KIND},
};

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
    /// The token, for clients that cannot set headers (the auth layer reads it).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` of `/api/realtime/stats/range`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    /// The token, for clients that cannot set headers (the auth layer reads it).
    #[allow(dead_code)]
    access_token: Option<String>,
}

fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
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

/// The statistics count every channel's events (the private one included): only a caller
/// granted every channel, or an admin, may read them.
fn may_read(state: &AppState, principal: &Option<Extension<Principal>>) -> Result<(), ApiError> {
    let p = caller(state, principal)?;
    if p.is_admin() || matches!(p.channels, Grant::All) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "forbidden_channel",
        "the statistics count the events of every channel: they need a token granting channels \"*\" (or the admin role)",
    ))
}

/// `GET /api/realtime/stats/range?from=&to=`: the daily statistics of each day and their sum.
pub async fn range(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    may_read(&state, &principal)?;
    let q: RangeQuery = query(&uri)?;
    let from = date_param("from", q.from.as_deref())?
        .ok_or_else(|| ApiError::bad_request("invalid_date", "from: required (YYYY-MM-DD)"))?;
    let to = date_param("to", q.to.as_deref())?
        .ok_or_else(|| ApiError::bad_request("invalid_date", "to: required (YYYY-MM-DD)"))?;
    match stats_schema::range(state.stats_store(), from, to).await {
        Ok(v) => Ok(Json(v)),
        Err(stats_schema::RangeError::Invalid(m)) => Err(ApiError::bad_request("invalid_range", m)),
        Err(stats_schema::RangeError::Read(e)) => Err(store_unavailable(e)),
    }
}

/// `GET /api/realtime/stats[?date=YYYY-MM-DD]`: this instance, every live instance, their
/// total, and the daily statistics of `date` (default: today, UTC). A store that cannot be read
/// leaves `daily` null rather than hiding the live figures.
pub async fn stats(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    may_read(&state, &principal)?;
    let q: DateQuery = query(&uri)?;
    let day = date_param("date", q.date.as_deref())?.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let daily = match stats_schema::daily(state.stats_store(), day).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "daily statistics unavailable");
            Value::Null
        }
    };
    let me = current(state.metrics(), state.hub(), &state.config().instance_id, "");
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
    Ok(Json(json!({
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
