//! Deliveries held for escalation (`crate::escalate`), per route: each waits until its due
//! time, then is decided once (sent or suppressed) and the decision kept for the dashboard. In
//! Redis under the route's hash tag (`sinks:held:{<route>}`, `:held-data:`, `:decided:`,
//! `:escalations:`), durable and shared by every replica; or in this process.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use event_bus::LuaScript;
use fred::{
    clients::Client,
    interfaces::{HashesInterface, SortedSetsInterface},
    types::Value,
};

use super::{
    entry::StoreError,
    redis::{err, QUEUED_TTL_SECS},
};

const HOLD: &str = include_str!("../lua/hold.lua");
const DECIDE: &str = include_str!("../lua/decide.lua");
/// The decisions kept per route (the newest).
pub const MAX_DECISIONS: usize = 1_000;
/// The most deliveries one route holds in this process.
const MAX_HELD: usize = 100_000;

/// One delivery to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Its key (the event's, per route).
    pub key: String,
    /// When it is due, Unix ms.
    pub due_ms: u64,
    /// What the escalator needs then (JSON).
    pub data: String,
}

/// The held deliveries of every route, in Redis or in this process. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Held {
    /// In Redis.
    Redis {
        /// The connection.
        client: Client,
        /// The key prefix.
        prefix: String,
        /// `hold.lua`.
        hold: LuaScript,
        /// `decide.lua`.
        decide: LuaScript,
    },
    /// In this process.
    Memory(MemoryHeld),
}

/// Held deliveries in this process. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct MemoryHeld(Arc<Mutex<HashMap<String, Route>>>);

impl MemoryHeld {
    /// What the dashboard shows (`/api/sinks/destinations`, `escalations`): `{routes: [{route,
    /// rule}], waiting: [{route, channel, event_id, text, due_at}], decided: [{route, decision,
    /// why | by, ...}]}`, at most `limit` waiting and decided per route, the newest decisions
    /// first.
    pub fn panel(&self, limit: usize) -> serde_json::Value {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = all.keys().collect();
        names.sort();
        let (mut routes, mut waiting, mut decided) = (Vec::new(), Vec::new(), Vec::<serde_json::Value>::new());
        for name in names {
            let r = &all[name];
            let Some(about) = &r.about else { continue };
            routes.push(serde_json::json!({"route": name, "rule": parse(about)}));
            for (due, key) in r.due.iter().take(limit) {
                if let Some((_, data)) = r.data.get(key) {
                    waiting.push(waiting_row(name, *due, data));
                }
            }
            for d in r.decisions.iter().rev().take(limit) {
                let mut row: serde_json::Map<String, serde_json::Value> =
                    d.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                row.insert("route".into(), name.clone().into());
                decided.push(row.into());
            }
        }
        serde_json::json!({"routes": routes, "waiting": waiting, "decided": decided})
    }
}

fn parse(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// A held delivery as the dashboard lists it.
fn waiting_row(route: &str, due: u64, data: &str) -> serde_json::Value {
    let d = parse(data);
    serde_json::json!({"route": route, "channel": d["event"]["channel"], "event_id": d["event"]["id"],
        "text": d["text"], "due_at": due})
}

#[derive(Debug, Default)]
struct Route {
    about: Option<String>,
    due: BTreeSet<(u64, String)>,
    data: HashMap<String, (u64, String)>,
    decided: HashSet<String>,
    decided_order: VecDeque<String>,
    decisions: VecDeque<Vec<(String, String)>>,
}

impl Held {
    /// Over Redis.
    pub fn redis(client: Client, prefix: String) -> Held {
        Held::Redis {
            client,
            prefix,
            hold: LuaScript::new(HOLD),
            decide: LuaScript::new(DECIDE),
        }
    }

    fn key(prefix: &str, what: &str, route: &str) -> String {
        format!("{prefix}sinks:{what}:{{{route}}}")
    }

    /// Holds each of `batch` for `route` unless it was held or decided before; which were
    /// held now.
    pub async fn hold(&self, route: &str, batch: &[Hold]) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Held::Memory(m) => {
                let mut all = m.0.lock().unwrap_or_else(|p| p.into_inner());
                let r = all.entry(route.to_owned()).or_default();
                Ok(batch
                    .iter()
                    .map(|h| {
                        if r.decided.contains(&h.key) || r.data.contains_key(&h.key) || r.data.len() >= MAX_HELD {
                            return false;
                        }
                        r.data.insert(h.key.clone(), (h.due_ms, h.data.clone()));
                        r.due.insert((h.due_ms, h.key.clone()));
                        true
                    })
                    .collect())
            }
            Held::Redis {
                client, prefix, hold, ..
            } => {
                let mut keys = vec![Self::key(prefix, "held", route), Self::key(prefix, "held-data", route)];
                let mut args: Vec<Value> = Vec::new();
                for h in batch {
                    keys.push(format!("{}:{}", Self::key(prefix, "decided", route), h.key));
                    args.extend([h.key.clone().into(), (h.due_ms as i64).into(), h.data.clone().into()]);
                }
                let out: Vec<i64> = hold
                    .run(client, keys, args)
                    .await
                    .map_err(|e| StoreError(format!("hold: {e}")))?;
                Ok(out.into_iter().map(|n| n == 1).collect())
            }
        }
    }

    /// At most `limit` of `route`'s deliveries due at `now_ms`, earliest first: `(key, due, data)`.
    pub async fn due(&self, route: &str, now_ms: u64, limit: usize) -> Result<Vec<(String, u64, String)>, StoreError> {
        match self {
            Held::Memory(m) => {
                let all = m.0.lock().unwrap_or_else(|p| p.into_inner());
                let Some(r) = all.get(route) else { return Ok(Vec::new()) };
                Ok(r.due
                    .iter()
                    .take_while(|(due, _)| *due <= now_ms)
                    .take(limit)
                    .filter_map(|(due, k)| r.data.get(k).map(|(_, d)| (k.clone(), *due, d.clone())))
                    .collect())
            }
            Held::Redis { client, prefix, .. } => {
                let max = now_ms.min(i64::MAX as u64) as i64;
                let keys: Vec<(String, f64)> = client
                    .zrangebyscore(Self::key(prefix, "held", route), 0, max, true, Some((0, limit as i64)))
                    .await
                    .map_err(err("held"))?;
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
                let data: Vec<Option<String>> = client
                    .hmget(Self::key(prefix, "held-data", route), names)
                    .await
                    .map_err(err("held data"))?;
                Ok(keys
                    .into_iter()
                    .zip(data)
                    .filter_map(|((k, due), d)| d.map(|d| (k, due as u64, d)))
                    .collect())
            }
        }
    }

    /// Records `decision` (field, value pairs) on `route`'s delivery `key` and lets it go; whether
    /// it was still held (false: another replica decided it first).
    pub async fn decide(&self, route: &str, key: &str, decision: &[(&str, String)]) -> Result<bool, StoreError> {
        match self {
            Held::Memory(m) => {
                let mut all = m.0.lock().unwrap_or_else(|p| p.into_inner());
                let r = all.entry(route.to_owned()).or_default();
                let Some((due, _)) = r.data.remove(key) else {
                    return Ok(false);
                };
                r.due.remove(&(due, key.to_owned()));
                r.decided.insert(key.to_owned());
                r.decided_order.push_back(key.to_owned());
                if r.decided_order.len() > MAX_HELD {
                    if let Some(old) = r.decided_order.pop_front() {
                        r.decided.remove(&old);
                    }
                }
                r.decisions
                    .push_back(decision.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect());
                if r.decisions.len() > MAX_DECISIONS {
                    r.decisions.pop_front();
                }
                Ok(true)
            }
            Held::Redis {
                client, prefix, decide, ..
            } => {
                let keys = vec![
                    Self::key(prefix, "held", route),
                    Self::key(prefix, "held-data", route),
                    format!("{}:{key}", Self::key(prefix, "decided", route)),
                    Self::key(prefix, "escalations", route),
                ];
                let mut args: Vec<Value> = vec![key.into(), QUEUED_TTL_SECS.into(), (MAX_DECISIONS as i64).into()];
                for (k, v) in decision {
                    args.extend([(*k).into(), v.clone().into()]);
                }
                let n: i64 = decide
                    .run(client, keys, args)
                    .await
                    .map_err(|e| StoreError(format!("decide: {e}")))?;
                Ok(n == 1)
            }
        }
    }

    /// Announces escalating route `route` (`about`: its rule, JSON) for the dashboard.
    pub async fn announce(&self, route: &str, about: &str) -> Result<(), StoreError> {
        match self {
            Held::Memory(m) => {
                let mut all = m.0.lock().unwrap_or_else(|p| p.into_inner());
                all.entry(route.to_owned()).or_default().about = Some(about.to_owned());
                Ok(())
            }
            Held::Redis { client, prefix, .. } => client
                .hset(format!("{prefix}sinks:escalating"), (route, about))
                .await
                .map_err(err("announce")),
        }
    }
}
