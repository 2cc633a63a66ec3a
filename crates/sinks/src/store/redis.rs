//! The sinks' state in Redis, next to the streams (`docs/reference.md`, "Redis keys"): per
//! destination an outbox stream of deliveries, markers that make queueing idempotent, attempts,
//! dead letters, a shared token bucket, a backoff and a disabled flag (all under one hash tag,
//! `{<destination>}`); per channel the position read up to; leases.

use event_bus::{Channel, EventId, LuaScript};

use super::entry::{Bound, Enqueued, Entry, Peek, Queued, StoreError};
use fred::{
    clients::Client,
    interfaces::{HashesInterface, KeysInterface, StreamsInterface},
    types::Value,
};

const ENQUEUE: &str = include_str!("../lua/enqueue.lua");
const NEXT: &str = include_str!("../lua/next.lua");
const DEAD: &str = include_str!("../lua/dead.lua");
const LEASE: &str = include_str!("../lua/lease.lua");
const FINISH: &str = include_str!("../lua/finish.lua");
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
    next: LuaScript,
    dead: LuaScript,
    lease: LuaScript,
    finish: LuaScript,
}

/// The enqueue script's `{new, dead}`.
fn enqueued(v: Value) -> Enqueued {
    let Value::Array(a) = v else { return Enqueued::default() };
    let n = |i: usize| a.get(i).and_then(Value::as_i64).unwrap_or(0);
    Enqueued {
        new: n(0) == 1,
        dead: n(1).max(0) as u64,
    }
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
            next: LuaScript::new(NEXT),
            dead: LuaScript::new(DEAD),
            lease: LuaScript::new(LEASE),
            finish: LuaScript::new(FINISH),
        }
    }

    /// A destination's key `what`.
    pub fn key(&self, what: &str, destination: &str) -> String {
        format!("{}sinks:{what}:{{{destination}}}", self.prefix)
    }

    /// The key of lease `name`: a destination's (`dest:<d>`) in the destination's hash slot,
    /// so that [`RedisStore::finish`] checks it atomically with the outbox.
    fn lease_key(&self, name: &str) -> String {
        match name.strip_prefix("dest:") {
            Some(d) => format!("{}sinks:lease:dest:{{{d}}}", self.prefix),
            None => format!("{}sinks:lease:{{{name}}}", self.prefix),
        }
    }

    /// Takes or renews lease `name` for `holder`; whether it is held now.
    pub async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let key = self.lease_key(name);
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

    /// Each of `batch` queued, in order, pipelined (the script by its hash; if Redis lost it,
    /// each again by [`RedisStore::enqueue`], which loads it: queueing twice is harmless).
    pub async fn enqueue_many(&self, batch: &[Queued], bound: Bound) -> Result<Vec<Enqueued>, StoreError> {
        use fred::interfaces::ClientLike;
        let p = self.client.pipeline();
        // EVALSHA <sha> 4 <outbox> <marker> ...: routed by its first key (argument 2).
        let evalsha = || fred::types::CustomCommand::new("EVALSHA", fred::types::ClusterHash::Offset(2), false);
        for q in batch {
            let (keys, args) = self.enqueue_call(q, bound);
            let mut call: Vec<Value> = vec![self.enqueue.script().sha1().to_string().into(), 4.into()];
            call.extend(keys.into_iter().map(Value::from));
            call.extend(args);
            p.custom::<(), Value>(evalsha(), call).await.map_err(err("enqueue"))?;
        }
        let answers: Vec<Result<Value, fred::error::Error>> = p.try_all().await;
        if answers.iter().all(Result::is_ok) && answers.len() == batch.len() {
            return Ok(answers
                .into_iter()
                .map(|a| enqueued(a.unwrap_or(Value::Null)))
                .collect());
        }
        let mut out = Vec::with_capacity(batch.len());
        for q in batch {
            out.push(self.enqueue(q, bound).await?);
        }
        Ok(out)
    }

    fn enqueue_call(&self, q: &Queued, bound: Bound) -> (Vec<String>, Vec<Value>) {
        let d = q.destination.as_str();
        let keys = vec![
            self.key("outbox", d),
            format!("{}:{}", self.key("queued", d), q.key),
            self.key("dead", d),
            self.key("attempts", d),
        ];
        let mut args: Vec<Value> = vec![
            QUEUED_TTL_SECS.into(),
            (bound.max_backlog as i64).into(),
            (bound.max_age_ms as i64).into(),
        ];
        for (k, v) in &q.fields {
            args.push((*k).into());
            args.push(v.as_str().into());
        }
        (keys, args)
    }

    /// Queues delivery `q` unless its key was queued before, keeping the outbox within
    /// `bound`; what it did.
    pub async fn enqueue(&self, q: &Queued, bound: Bound) -> Result<Enqueued, StoreError> {
        let (keys, args) = self.enqueue_call(q, bound);
        let answer: Value = self
            .enqueue
            .run(&self.client, keys, args)
            .await
            .map_err(err("enqueue"))?;
        Ok(enqueued(answer))
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

    /// Before a delivery, in one script (`lua/next.lua`).
    pub async fn next(&self, destination: &str, rate: f64, burst: f64, now_ms: u64) -> Result<Peek, StoreError> {
        let keys = ["outbox", "disabled", "backoff", "bucket", "attempts"].map(|k| self.key(k, destination));
        let v: Value = self
            .next
            .run(
                &self.client,
                keys.to_vec(),
                vec![rate.into(), burst.into(), (now_ms as i64).into()],
            )
            .await
            .map_err(err("next"))?;
        let Value::Array(mut a) = v else {
            return Err(StoreError("next: not an array".into()));
        };
        let text = |v: Option<Value>| v.and_then(|v| v.as_string());
        let number = |v: Option<Value>| v.and_then(|v| v.as_u64()).unwrap_or(0);
        let mut it = a.drain(..);
        let backlog = number(it.next());
        let disabled = text(it.next());
        let backoff = text(it.next()).and_then(|s| s.parse().ok());
        let wait_ms = number(it.next());
        let oldest = match (text(it.next()), it.next()) {
            (Some(id), Some(fields)) => entries(Value::Array(vec![Value::Array(vec![id.into(), fields])]))
                .into_iter()
                .next(),
            _ => None,
        };
        Ok(Peek {
            backlog,
            disabled,
            backoff,
            oldest,
            wait_ms,
            attempts: number(it.next()),
        })
    }

    /// Off the outbox, its attempts forgotten, noted as accepted, if `holder` still holds
    /// lease `lease`: one script call; whether it did.
    pub async fn finish(
        &self,
        destination: &str,
        entry: &Entry,
        now_ms: u64,
        lease: &str,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let key = entry.fields.get("key").cloned().unwrap_or_default();
        let keys = vec![
            self.key("outbox", destination),
            self.key("attempts", destination),
            self.key("status", destination),
            self.lease_key(lease),
        ];
        let args: Vec<Value> = vec![
            holder.into(),
            entry.id.as_str().into(),
            key.into(),
            now_ms.to_string().into(),
        ];
        let done: i64 = self.finish.run(&self.client, keys, args).await.map_err(err("finish"))?;
        Ok(done == 1)
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
