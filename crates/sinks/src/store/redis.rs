//! The sinks' state in Redis, next to the streams (`docs/reference.md`, "Redis keys"): per
//! destination an outbox stream of deliveries, markers that make queueing idempotent, attempts,
//! dead letters, a shared token bucket, a backoff and a disabled flag (all under one hash tag,
//! `{<destination>}`); per channel the position read up to; leases.

use event_bus::{Channel, EventId, LuaScript};

use super::entry::{Entry, Peek, StoreError};
use fred::{
    clients::Client,
    interfaces::{HashesInterface, KeysInterface, StreamsInterface},
    types::Value,
};

const ENQUEUE: &str = include_str!("../lua/enqueue.lua");
const BUCKET: &str = include_str!("../lua/bucket.lua");
const DEAD: &str = include_str!("../lua/dead.lua");
const LEASE: &str = include_str!("../lua/lease.lua");
/// How long a "queued" marker stops a second queueing of the same delivery (a week: longer than
/// any outage a restart resumes from).
pub(super) const QUEUED_TTL_SECS: i64 = 7 * 86_400;

pub(super) fn err(context: &'static str) -> impl Fn(fred::error::Error) -> StoreError {
    move |e| StoreError(format!("{context}: {e}"))
}

/// The store in Redis.
#[derive(Clone, Debug)]
pub struct RedisStore {
    pub(super) client: Client,
    pub(super) prefix: String,
    enqueue: LuaScript,
    bucket: LuaScript,
    dead: LuaScript,
    lease: LuaScript,
}

fn entries(v: Value) -> Vec<Entry> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else { return None };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = pair.pop()?.as_string()?;
            let Value::Array(kv) = fields else { return None };
            let kv: Vec<String> = kv.into_iter().filter_map(|v| v.as_string()).collect();
            let fields = kv
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            Some(Entry { id, fields })
        })
        .collect()
}

impl RedisStore {
    /// Over the bus' Redis connection, under its prefix.
    pub fn new(client: Client, prefix: String) -> RedisStore {
        RedisStore {
            client,
            prefix,
            enqueue: LuaScript::new(ENQUEUE),
            bucket: LuaScript::new(BUCKET),
            dead: LuaScript::new(DEAD),
            lease: LuaScript::new(LEASE),
        }
    }

    /// A destination's key `what`.
    pub fn key(&self, what: &str, destination: &str) -> String {
        format!("{}sinks:{what}:{{{destination}}}", self.prefix)
    }

    /// Takes or renews lease `name` for `holder`; whether it is held now.
    pub async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let key = format!("{}sinks:lease:{{{name}}}", self.prefix);
        let held: i64 = self
            .lease
            .run(&self.client, vec![key], vec![holder.into(), (ttl_ms as i64).into()])
            .await
            .map_err(err("lease"))?;
        Ok(held == 1)
    }

    /// Where a channel was read up to; `None` the first time.
    pub async fn position(&self, channel: &Channel) -> Result<Option<EventId>, StoreError> {
        let v: Option<String> = self
            .client
            .hget(format!("{}sinks:position", self.prefix), channel.as_str())
            .await
            .map_err(err("position"))?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    /// Moves a channel's position (forward only matters: a re-read is harmless).
    pub async fn set_position(&self, channel: &Channel, id: EventId) -> Result<(), StoreError> {
        self.client
            .hset::<(), _, _>(
                format!("{}sinks:position", self.prefix),
                (channel.as_str(), id.to_string()),
            )
            .await
            .map_err(err("set position"))
    }

    /// Queues a delivery to `destination` unless its `key` was queued before; whether it was now.
    pub async fn enqueue(&self, destination: &str, key: &str, fields: &[(&str, String)]) -> Result<bool, StoreError> {
        let keys = vec![
            self.key("outbox", destination),
            format!("{}:{key}", self.key("queued", destination)),
        ];
        let mut args: Vec<Value> = vec![QUEUED_TTL_SECS.into()];
        for (k, v) in fields {
            args.push((*k).into());
            args.push(v.as_str().into());
        }
        let queued: i64 = self
            .enqueue
            .run(&self.client, keys, args)
            .await
            .map_err(err("enqueue"))?;
        Ok(queued == 1)
    }

    /// The oldest queued delivery of `destination`.
    pub async fn oldest(&self, destination: &str) -> Result<Option<Entry>, StoreError> {
        let v: Value = self
            .client
            .xrange(self.key("outbox", destination), "-", "+", Some(1))
            .await
            .map_err(err("outbox"))?;
        Ok(entries(v).into_iter().next())
    }

    /// Deliveries waiting for `destination`.
    pub async fn backlog(&self, destination: &str) -> Result<u64, StoreError> {
        self.client
            .xlen(self.key("outbox", destination))
            .await
            .map_err(err("backlog"))
    }

    /// A delivery is done: off the outbox.
    pub async fn done(&self, destination: &str, entry: &Entry) -> Result<(), StoreError> {
        let key = entry.fields.get("key").cloned().unwrap_or_default();
        self.client
            .xdel::<(), _, _>(self.key("outbox", destination), entry.id.as_str())
            .await
            .map_err(err("done"))?;
        self.client
            .hdel::<(), _, _>(self.key("attempts", destination), key)
            .await
            .map_err(err("done"))
    }

    /// Counts an attempt at a delivery; the attempts so far, this one included.
    pub async fn attempt(&self, destination: &str, entry: &Entry) -> Result<u64, StoreError> {
        let key = entry.fields.get("key").cloned().unwrap_or_default();
        self.client
            .hincrby(self.key("attempts", destination), key, 1)
            .await
            .map_err(err("attempt"))
    }

    /// Moves a delivery to the dead letters, with why.
    pub async fn dead_letter(&self, destination: &str, entry: &Entry, why: &str) -> Result<(), StoreError> {
        let keys = vec![
            self.key("outbox", destination),
            self.key("dead", destination),
            self.key("attempts", destination),
        ];
        let key = entry.fields.get("key").cloned().unwrap_or_default();
        let mut args: Vec<Value> = vec![entry.id.as_str().into(), key.into()];
        for (k, v) in &entry.fields {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        args.push("why".into());
        args.push(why.into());
        let _: i64 = self
            .dead
            .run(&self.client, keys, args)
            .await
            .map_err(err("dead letter"))?;
        Ok(())
    }

    /// The dead letters of `destination`, oldest first (at most `limit`).
    pub async fn dead_letters(&self, destination: &str, limit: u64) -> Result<Vec<Entry>, StoreError> {
        let v: Value = self
            .client
            .xrange(self.key("dead", destination), "-", "+", Some(limit))
            .await
            .map_err(err("dead letters"))?;
        Ok(entries(v))
    }

    /// Queues the dead letters of `destination` again (their keys are kept, so receivers still
    /// take each once) and removes them from the dead letters; how many.
    pub async fn replay(&self, destination: &str) -> Result<usize, StoreError> {
        let letters = self.dead_letters(destination, 10_000).await?;
        for l in &letters {
            let fields: Vec<(String, String)> = l
                .fields
                .iter()
                .filter(|(k, _)| *k != "why")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.client
                .xadd::<(), _, _, _, _>(self.key("outbox", destination), false, None, "*", fields)
                .await
                .map_err(err("replay"))?;
            self.client
                .xdel::<(), _, _>(self.key("dead", destination), l.id.as_str())
                .await
                .map_err(err("replay"))?;
        }
        Ok(letters.len())
    }

    /// Takes a token of `destination`'s bucket (shared by every replica); the ms to wait first.
    pub async fn take(&self, destination: &str, rate: f64, burst: f64, now_ms: u64) -> Result<u64, StoreError> {
        let wait: i64 = self
            .bucket
            .run(
                &self.client,
                vec![self.key("bucket", destination)],
                vec![rate.into(), burst.into(), (now_ms as i64).into()],
            )
            .await
            .map_err(err("bucket"))?;
        Ok(wait.max(0) as u64)
    }

    /// Until when (Unix ms) `destination` is backing off, set by whichever replica was told to.
    pub async fn backoff(&self, destination: &str) -> Result<Option<u64>, StoreError> {
        let v: Option<String> = self
            .client
            .get(self.key("backoff", destination))
            .await
            .map_err(err("backoff"))?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    /// Sets `destination`'s backoff until `until_ms`.
    pub async fn set_backoff(&self, destination: &str, until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        let px = until_ms.saturating_sub(now_ms).max(1) as i64;
        self.client
            .set::<(), _, _>(
                self.key("backoff", destination),
                until_ms.to_string(),
                Some(fred::types::Expiration::PX(px)),
                None,
                false,
            )
            .await
            .map_err(err("set backoff"))
    }

    /// Why `destination` is disabled, if it is.
    pub async fn disabled(&self, destination: &str) -> Result<Option<String>, StoreError> {
        self.client
            .get(self.key("disabled", destination))
            .await
            .map_err(err("disabled"))
    }

    /// Disables `destination` (until an operator enables it: `sinks enable <destination>`).
    pub async fn disable(&self, destination: &str, why: &str) -> Result<(), StoreError> {
        self.client
            .set::<(), _, _>(self.key("disabled", destination), why, None, None, false)
            .await
            .map_err(err("disable"))
    }

    /// Announces this replica's destinations, `(name, kind)`, for the dashboard (the gateway
    /// reads `<prefix>sinks:destinations`).
    pub async fn announce(&self, destinations: &[(&str, &str)]) -> Result<(), StoreError> {
        let fields: Vec<(String, String)> = destinations
            .iter()
            .map(|(n, k)| ((*n).to_owned(), serde_json::json!({ "kind": k }).to_string()))
            .collect();
        if fields.is_empty() {
            return Ok(());
        }
        self.client
            .hset::<(), _, _>(format!("{}sinks:destinations", self.prefix), fields)
            .await
            .map_err(err("announce"))
    }

    /// Notes what `destination` last did, for the dashboard: `accepted_at`, or `error` and
    /// `error_at` (Unix ms).
    pub async fn note(&self, destination: &str, error: Option<&str>, now_ms: u64) -> Result<(), StoreError> {
        let fields: Vec<(&str, String)> = match error {
            None => vec![("accepted_at", now_ms.to_string())],
            Some(e) => vec![
                ("error", e.chars().take(300).collect()),
                ("error_at", now_ms.to_string()),
            ],
        };
        self.client
            .hset::<(), _, _>(self.key("status", destination), fields)
            .await
            .map_err(err("note"))
    }

    /// The backlog, disabled flag, backoff and oldest delivery, pipelined.
    pub async fn peek(&self, destination: &str) -> Result<Peek, StoreError> {
        let p = self.client.pipeline();
        let queued = |r: Result<(), fred::error::Error>| r.map_err(err("peek"));
        queued(p.xlen(self.key("outbox", destination)).await)?;
        queued(p.get(self.key("disabled", destination)).await)?;
        queued(p.get(self.key("backoff", destination)).await)?;
        queued(p.xrange(self.key("outbox", destination), "-", "+", Some(1)).await)?;
        let mut all: Vec<Value> = p.all().await.map_err(err("peek"))?;
        if all.len() != 4 {
            return Err(StoreError(format!("peek: {} answers to 4 commands", all.len())));
        }
        let oldest = entries(all.pop().unwrap_or(Value::Null)).into_iter().next();
        let text = |v: Value| v.as_string();
        let backoff = text(all.pop().unwrap_or(Value::Null)).and_then(|s| s.parse().ok());
        let disabled = text(all.pop().unwrap_or(Value::Null));
        let backlog = all.pop().and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Peek {
            backlog,
            disabled,
            backoff,
            oldest,
        })
    }

    /// Off the outbox, its attempts forgotten, noted as accepted: pipelined.
    pub async fn finish(&self, destination: &str, entry: &Entry, now_ms: u64) -> Result<(), StoreError> {
        let key = entry.fields.get("key").cloned().unwrap_or_default();
        let p = self.client.pipeline();
        let queued = |r: Result<(), fred::error::Error>| r.map_err(err("finish"));
        queued(p.xdel(self.key("outbox", destination), entry.id.as_str()).await)?;
        queued(p.hdel(self.key("attempts", destination), key).await)?;
        queued(
            p.hset(self.key("status", destination), ("accepted_at", now_ms.to_string()))
                .await,
        )?;
        let _: Vec<Value> = p.all().await.map_err(err("finish"))?;
        Ok(())
    }

    /// Counts an invalid answer of `destination` in its window (all replicas together).
    pub async fn count_invalid(&self, destination: &str, window_ms: u64, len_ms: u64) -> Result<u64, StoreError> {
        let key = format!("{}:{window_ms}", self.key("invalid", destination));
        let n: u64 = self.client.incr(&key).await.map_err(err("invalid"))?;
        if n == 1 {
            self.client
                .pexpire::<(), _>(&key, len_ms as i64 + 60_000, None)
                .await
                .map_err(err("invalid"))?;
        }
        Ok(n)
    }

    /// Enables `destination` again.
    pub async fn enable(&self, destination: &str) -> Result<(), StoreError> {
        self.client
            .del::<(), _>(self.key("disabled", destination))
            .await
            .map_err(err("enable"))
    }
}
