//! Where the daily hashes live: Redis (the Lua scripts in `lua/`), or this process when the bus
//! is the in-memory one (`make run`, tests). Both apply a tally with the same rule: skip what the
//! marker says is done, add the rest and move the marker, as one step.

use std::{collections::HashMap, time::Duration};

use chrono::NaiveDate;
use event_bus::{AnyBus, Channel, EventId, LuaScript};
use fred::{clients::Client, interfaces::HashesInterface, types::Value};

use stats_schema::{
    keys::{day_key, hints_key, lease_key, progress_field},
    DayStore, MemoryDays,
};

use crate::day::Tally;

const APPLY_LUA: &str = include_str!("lua/apply.lua");
const FOLD_LUA: &str = include_str!("lua/fold.lua");
const LEASE_LUA: &str = include_str!("lua/lease.lua");
/// Entries of a stream after an id, counted in Redis (up to a cap) without sending them.
const COUNT_LUA: &str = "return #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])";

/// A store operation failed (Redis unreachable, or an unexpected reply).
#[derive(Debug, thiserror::Error)]
#[error("stats store: {context}: {detail}")]
pub struct StoreError {
    context: &'static str,
    detail: String,
}

impl StoreError {
    /// A bus operation (read, roster) failed.
    pub fn from_bus(e: event_bus::BusError) -> StoreError {
        StoreError {
            context: "bus",
            detail: e.to_string(),
        }
    }

    fn redis(context: &'static str) -> impl FnOnce(fred::error::Error) -> StoreError {
        move |e| StoreError {
            context,
            detail: e.to_string(),
        }
    }
}

/// What applying a tally did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Added, and the marker moved to the tally's last id.
    Done,
    /// The marker was already at or past the tally's last id: nothing added.
    Already,
    /// The marker is inside the tally: nothing added; send the part after this id.
    Partial(EventId),
}

/// One gateway's counters as read from its heartbeat hash.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewaySample {
    /// `INSTANCE_ID`.
    pub instance: String,
    /// When that gateway process started (a new value means its counters restarted from 0).
    pub started_at: String,
    /// Counter name, current value, and the baseline to use when the day has none.
    pub counters: Vec<(String, u64, u64)>,
}

/// One fold of the gateways' figures into a day.
#[derive(Clone, Copy, Debug)]
pub struct Fold<'a> {
    /// The day.
    pub day: NaiveDate,
    /// When the day's hash expires (Unix seconds).
    pub expire_at: i64,
    /// Now, Unix ms (the connection peak's time).
    pub now_ms: u64,
    /// Open connections over all gateways now.
    pub connections: u64,
    /// Each gateway's counters.
    pub samples: &'a [GatewaySample],
}

/// The daily hashes and the aggregator's bookkeeping.
#[derive(Clone, Debug)]
pub enum Store {
    /// In this process.
    Memory(MemoryStore),
    /// In Redis, next to the streams.
    Redis(Box<RedisStore>),
}

impl Store {
    /// The store that goes with a bus: Redis over the bus' own connection, or a new in-process
    /// store for the memory bus (share it with [`Clone`] between aggregator and gateway).
    pub fn for_bus(bus: &AnyBus) -> Store {
        let prefix = bus.config().prefix.clone();
        match bus {
            AnyBus::Memory(_) => Store::Memory(MemoryStore::default()),
            AnyBus::Redis(b) => Store::Redis(Box::new(RedisStore::new(b.client().clone(), prefix))),
        }
    }

    /// Adds `tally` to its day's hash unless the channel's marker there says it is done.
    pub async fn apply(&self, channel: &Channel, tally: &Tally, expire_at: i64) -> Result<Applied, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.apply(channel, tally)),
            Store::Redis(r) => r.apply(channel, tally, expire_at).await,
        }
    }

    /// Adds the gateways' counter deltas and the connection peak to its day.
    pub async fn fold(&self, f: Fold<'_>) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.fold(&f);
                Ok(())
            }
            Store::Redis(r) => r.fold(&f).await,
        }
    }

    /// Where the gateway reads the hashes this store writes (in memory: the same ones).
    pub fn days(&self) -> DayStore {
        match self {
            Store::Memory(m) => DayStore::Memory(m.hashes.clone()),
            Store::Redis(r) => DayStore::Redis {
                client: r.client.clone(),
                prefix: r.prefix.clone(),
            },
        }
    }

    /// The whole hash of `day` (empty when there is none).
    pub async fn read_day(&self, day: NaiveDate) -> Result<HashMap<String, String>, StoreError> {
        self.days().read_day(day).await.map_err(|e| StoreError {
            context: "read day",
            detail: e.to_string(),
        })
    }

    /// Where each channel was last known to be (a hint: it may lag the markers, never lead).
    pub async fn hints(&self) -> Result<HashMap<String, String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.hashes.read("progress")),
            Store::Redis(r) => r
                .client
                .hgetall(hints_key(&r.prefix))
                .await
                .map_err(StoreError::redis("HGETALL progress")),
        }
    }

    /// Records the hint for `channel` (after the tally up to `id` was applied).
    pub async fn set_hint(&self, channel: &Channel, id: EventId) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.hashes
                    .update("progress", |h| h.insert(channel.to_string(), id.to_string()));
                Ok(())
            }
            Store::Redis(r) => r
                .client
                .hset::<(), _, _>(hints_key(&r.prefix), (channel.as_str().to_owned(), id.to_string()))
                .await
                .map_err(StoreError::redis("HSET progress")),
        }
    }

    /// Entries of `channel`'s stream after `pos`, up to `cap`; `None` where the bus itself
    /// should be asked (memory).
    pub async fn count_after(
        &self,
        bus: &event_bus::BusConfig,
        channel: &Channel,
        pos: EventId,
        cap: usize,
    ) -> Result<Option<usize>, StoreError> {
        match self {
            Store::Memory(_) => Ok(None),
            Store::Redis(r) => {
                let key = bus.keys().stream(channel);
                let n: i64 = r
                    .eval(&r.count, vec![key], vec![pos.to_string().into(), (cap as i64).into()])
                    .await?;
                Ok(Some(n.max(0) as usize))
            }
        }
    }

    /// Takes or renews the lease `name` for `holder`; whether it is held now. In memory there
    /// is one process, so it always is.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => {
                let key = lease_key(&r.prefix, name);
                let v: i64 = r
                    .eval(
                        &r.lease,
                        vec![key],
                        vec![holder.into(), (ttl.as_millis() as i64).into()],
                    )
                    .await?;
                Ok(v == 1)
            }
        }
    }
}

/// Daily hashes in Redis.
#[derive(Clone, Debug)]
pub struct RedisStore {
    client: Client,
    prefix: String,
    apply: LuaScript,
    fold: LuaScript,
    lease: LuaScript,
    count: LuaScript,
}

impl RedisStore {
    /// Over `client` (which may be shared with the bus), keys under `prefix`.
    pub fn new(client: Client, prefix: String) -> Self {
        RedisStore {
            client,
            prefix,
            apply: LuaScript::new(APPLY_LUA),
            fold: LuaScript::new(FOLD_LUA),
            lease: LuaScript::new(LEASE_LUA),
            count: LuaScript::new(COUNT_LUA),
        }
    }

    async fn eval<R: fred::types::FromValue>(
        &self,
        script: &LuaScript,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        script
            .run(&self.client, keys, args)
            .await
            .map_err(StoreError::redis("EVALSHA"))
    }

    async fn apply(&self, channel: &Channel, t: &Tally, expire_at: i64) -> Result<Applied, StoreError> {
        let (first_ms, last_ms) = match t.event_ms {
            Some((f, l)) => (f.to_string(), l.to_string()),
            None => (String::new(), String::new()),
        };
        let mut args: Vec<Value> = vec![
            progress_field(channel.as_str()).into(),
            t.first.to_string().into(),
            t.last.to_string().into(),
            expire_at.into(),
            first_ms.into(),
            last_ms.into(),
        ];
        for (field, n) in &t.incr {
            args.push(field.clone().into());
            args.push((*n).into());
        }
        let reply: Vec<Value> = self.eval(&self.apply, vec![day_key(&self.prefix, t.day)], args).await?;
        let bad = || StoreError {
            context: "apply script",
            detail: format!("unexpected reply {reply:?}"),
        };
        let code = reply.first().and_then(Value::as_i64).ok_or_else(bad)?;
        let marker: EventId = reply
            .get(1)
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(bad)?;
        Ok(match code {
            1 => Applied::Done,
            0 => Applied::Already,
            _ => Applied::Partial(marker),
        })
    }

    async fn fold(&self, f: &Fold<'_>) -> Result<(), StoreError> {
        let mut args: Vec<Value> = vec![
            f.expire_at.into(),
            (f.now_ms as i64).into(),
            (f.connections as i64).into(),
        ];
        for s in f.samples {
            args.push(s.instance.clone().into());
            args.push(s.started_at.clone().into());
            args.push((s.counters.len() as i64).into());
            for (field, value, fallback) in &s.counters {
                args.push(field.clone().into());
                args.push((*value as i64).into());
                args.push((*fallback as i64).into());
            }
        }
        let _: i64 = self.eval(&self.fold, vec![day_key(&self.prefix, f.day)], args).await?;
        Ok(())
    }
}

/// Daily hashes in this process (no expiry: a process does not live 90 days of memory mode).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    hashes: MemoryDays,
}

impl MemoryStore {
    fn apply(&self, channel: &Channel, t: &Tally) -> Applied {
        self.hashes
            .update(&MemoryDays::key(t.day), |h| Self::apply_to(h, channel, t))
    }

    fn apply_to(h: &mut HashMap<String, String>, channel: &Channel, t: &Tally) -> Applied {
        let field = progress_field(channel.as_str());
        if let Some(marker) = h.get(&field).and_then(|m| m.parse::<EventId>().ok()) {
            if marker >= t.last {
                return Applied::Already;
            }
            if marker >= t.first {
                return Applied::Partial(marker);
            }
        }
        for (k, n) in &t.incr {
            incr(h, k, *n);
        }
        h.insert(field, t.last.to_string());
        if let Some((first, last)) = t.event_ms {
            let get = |h: &HashMap<String, String>, k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok());
            if get(h, "first_event_ms").is_none_or(|f| first < f) {
                h.insert("first_event_ms".into(), first.to_string());
            }
            if get(h, "last_event_ms").is_none_or(|l| last > l) {
                h.insert("last_event_ms".into(), last.to_string());
            }
        }
        Applied::Done
    }

    fn fold(&self, f: &Fold<'_>) {
        self.hashes.update(&MemoryDays::key(f.day), |h| {
            Self::fold_into(h, f.now_ms, f.connections, f.samples)
        })
    }

    fn fold_into(h: &mut HashMap<String, String>, now_ms: u64, connections: u64, samples: &[GatewaySample]) {
        for s in samples {
            let prefix = format!("gwbase:{}:", s.instance);
            let same = h.get(&format!("{prefix}started_at")) == Some(&s.started_at);
            for (field, value, fallback) in &s.counters {
                let base = if same {
                    h.get(&format!("{prefix}{field}"))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                } else {
                    (*fallback).min(*value)
                };
                if *value >= base {
                    incr(h, &format!("gw:{field}"), (*value - base) as i64);
                    h.insert(format!("{prefix}{field}"), value.to_string());
                }
            }
            h.insert(format!("{prefix}started_at"), s.started_at.clone());
        }
        let peak: i64 = h.get("gw:connections_peak").and_then(|v| v.parse().ok()).unwrap_or(-1);
        if connections as i64 > peak {
            h.insert("gw:connections_peak".into(), connections.to_string());
            h.insert("gw:connections_peak_ms".into(), now_ms.to_string());
        }
    }
}

fn incr(h: &mut HashMap<String, String>, k: &str, n: i64) {
    let v = h.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) + n;
    h.insert(k.to_owned(), v.to_string());
}
