//! `GET /api/sinks/destinations` (role admin): each destination of the sinks and its state, for
//! the dashboard. The sinks keep their state in Redis next to the streams (`docs/reference.md`,
//! "Redis keys": `sinks:destinations`, `:disabled:`, `:backoff:`, `:outbox:`, `:dead:`,
//! `:status:`); this reads those keys and nothing else, so it works with any number of sinks
//! replicas and none of them needs a port the gateway can reach. On the memory bus, the sinks run
//! in this process if at all (`make run`), and say so themselves ([`crate::app::SinksView`]).

use std::collections::HashMap;

use axum::{extract::State, response::IntoResponse, response::Response, Json};
use event_bus::{AnyBus, Timestamp};
use fred::interfaces::{HashesInterface, KeysInterface, StreamsInterface};
use serde_json::{json, Value};

use crate::{app::AppState, error::ApiError};

/// The most destinations listed (a configuration has a handful).
const MAX_DESTINATIONS: usize = 200;

async fn read(client: &fred::clients::Client, prefix: &str) -> Result<Vec<Value>, fred::error::Error> {
    let names: HashMap<String, String> = client.hgetall(format!("{prefix}sinks:destinations")).await?;
    let mut names: Vec<(String, String)> = names.into_iter().collect();
    names.sort();
    names.truncate(MAX_DESTINATIONS);
    let now = Timestamp::now_ms();
    let mut out = Vec::with_capacity(names.len());
    for (name, about) in names {
        let key = |what: &str| format!("{prefix}sinks:{what}:{{{name}}}");
        let disabled: Option<String> = client.get(key("disabled")).await?;
        let backoff: Option<String> = client.get(key("backoff")).await?;
        let backoff = backoff.and_then(|b| b.parse::<u64>().ok()).filter(|u| *u > now);
        let backlog: u64 = client.xlen(key("outbox")).await?;
        let dead: u64 = client.xlen(key("dead")).await?;
        let status: HashMap<String, String> = client.hgetall(key("status")).await?;
        let number = |k: &str| status.get(k).and_then(|v| v.parse::<u64>().ok());
        let state = match (&disabled, backoff) {
            (Some(_), _) => "disabled",
            (None, Some(_)) => "backing_off",
            (None, None) => "healthy",
        };
        let about: Value = serde_json::from_str(&about).unwrap_or(Value::Null);
        out.push(json!({
            "name": name,
            "kind": about["kind"],
            "state": state,
            "disabled_because": disabled,
            "backing_off_until": backoff,
            "backlog": backlog,
            "dead_letters": dead,
            "last_accepted_at": number("accepted_at"),
            "last_error": status.get("error"),
            "last_error_at": number("error_at"),
        }));
    }
    Ok(out)
}

/// `GET /api/sinks/destinations`: `{destinations: [{name, kind, state: healthy|backing_off|disabled,
/// disabled_because, backing_off_until, backlog, dead_letters, last_accepted_at, last_error,
/// last_error_at}]}`, by name.
pub async fn destinations(State(state): State<AppState>) -> Result<Response, ApiError> {
    let list = match state.bus() {
        _ if state.sinks_view().is_some() => state.sinks_view().map(|v| (v.0)()).unwrap_or_default(),
        AnyBus::Memory(_) => Vec::new(),
        AnyBus::Redis(b) => read(b.client(), &state.bus().config().prefix).await.map_err(|e| {
            tracing::warn!(error = %e, "reading the sinks' state");
            ApiError::unavailable("store_unavailable", "Redis did not answer; try again", 2)
        })?,
    };
    Ok(Json(json!({"destinations": list, "at": Timestamp::now_ms()})).into_response())
}
