//! `GET /api/sinks/destinations` (role admin): each destination of the sinks and its state, for
//! the dashboard. The sinks keep their state in Redis next to the streams (`docs/reference.md`,
//! "Redis keys": `sinks:destinations`, `:disabled:`, `:backoff:`, `:outbox:`, `:dead:`,
//! `:status:`); this reads those keys and nothing else, so it works with any number of sinks
//! replicas and none of them needs a port the gateway can reach. On the memory bus, the sinks run
//! in this process if at all (`make run`), and say so themselves ([`crate::app::SinksView`]).

use std::collections::HashMap;

use axum::{extract::State, response::IntoResponse, response::Response, Json};
use event_bus::{AnyBus, Timestamp};
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface};
use serde_json::{json, Value};

use crate::{app::AppState, error::ApiError};

/// The most destinations (and escalating routes) listed (a configuration has a handful).
const MAX_DESTINATIONS: usize = 200;
/// The most waiting and decided escalations listed per route.
const PANEL_ROWS: i64 = 20;

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

/// The escalating routes (`sinks:escalating`), what each holds (`:held:`, `:held-data:`) and
/// its newest decisions (`:escalations:`), at most [`PANEL_ROWS`] of each per route.
async fn escalations(client: &fred::clients::Client, prefix: &str) -> Result<Value, fred::error::Error> {
    let routes: HashMap<String, String> = client.hgetall(format!("{prefix}sinks:escalating")).await?;
    let mut routes: Vec<(String, String)> = routes.into_iter().collect();
    routes.sort();
    routes.truncate(MAX_DESTINATIONS);
    let (mut rules, mut waiting, mut decided) = (Vec::new(), Vec::new(), Vec::new());
    for (route, about) in routes {
        let key = |what: &str| format!("{prefix}sinks:{what}:{{{route}}}");
        rules.push(json!({"route": route, "rule": serde_json::from_str::<Value>(&about).unwrap_or(Value::Null)}));
        let held: Vec<(String, f64)> = client
            .zrange(key("held"), 0, PANEL_ROWS - 1, None, false, None, true)
            .await?;
        if !held.is_empty() {
            let names: Vec<&str> = held.iter().map(|(k, _)| k.as_str()).collect();
            let data: Vec<Option<String>> = client.hmget(key("held-data"), names).await?;
            for ((_, due), d) in held.iter().zip(data) {
                let d: Value = d.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or(Value::Null);
                waiting.push(json!({"route": route, "channel": d["event"]["channel"],
                    "event_id": d["event"]["id"], "text": d["text"], "due_at": *due as u64}));
            }
        }
        let entries: Vec<(String, HashMap<String, String>)> = client
            .xrevrange(key("escalations"), "+", "-", Some(PANEL_ROWS as u64))
            .await?;
        for (_, mut fields) in entries {
            fields.insert("route".into(), route.clone());
            decided.push(json!(fields));
        }
    }
    Ok(json!({"routes": rules, "waiting": waiting, "decided": decided}))
}

/// `GET /api/sinks/destinations`: `{destinations: [{name, kind, state: healthy|backing_off|disabled,
/// disabled_because, backing_off_until, backlog, dead_letters, last_accepted_at, last_error,
/// last_error_at}], escalations: {routes, waiting, decided}}`, by name.
pub async fn destinations(State(state): State<AppState>) -> Result<Response, ApiError> {
    let empty = || json!({"destinations": [], "escalations": {"routes": [], "waiting": [], "decided": []}});
    let mut body = match state.bus() {
        _ if state.sinks_view().is_some() => state.sinks_view().map(|v| (v.0)()).unwrap_or_else(empty),
        AnyBus::Memory(_) => empty(),
        AnyBus::Redis(b) => {
            let prefix = &state.bus().config().prefix;
            let unavailable = |e: fred::error::Error| {
                tracing::warn!(error = %e, "reading the sinks' state");
                ApiError::unavailable("store_unavailable", "Redis did not answer; try again", 2)
            };
            let list = read(b.client(), prefix).await.map_err(unavailable)?;
            let escalations = escalations(b.client(), prefix).await.map_err(unavailable)?;
            json!({"destinations": list, "escalations": escalations})
        }
    };
    body["at"] = json!(Timestamp::now_ms());
    Ok(Json(body).into_response())
}
