//! The Redis backend (fred), for one Redis or a Redis Cluster.
//!
//! - Publish: one Lua script per channel ([`publish.lua`](./publish.lua)) stores the events with
//!   `XADD`, sets their idempotency keys and `PUBLISH`es each envelope, atomically. Every key it
//!   touches carries the `{<channel>}` hash tag, so it runs on Cluster unchanged.
//! - Subscribe: the stream is the only source of delivery (`XREAD BLOCK`), so replay and live
//!   are one read position and there is no seam to get wrong. Cluster forbids one `XREAD` over
//!   keys of different slots, so there is one reader per hash slot ([`reader`]).
//! - Node interop: the pub/sub channel is watched for plain `PUBLISH`es without an `id`, which
//!   are stored in the stream exactly once however many subscribers saw them ([`adopt`]).

mod adopt;
mod reader;
mod script;
mod value;

pub use script::LuaScript;

use std::{sync::Arc, time::Duration};

use fred::{
    clients::Client,
    interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface, SortedSetsInterface, StreamsInterface},
    types::{
        config::{Config, ReconnectPolicy},
        Builder, Value,
    },
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{
        check_channels, check_event, gap_check, Bus, Figures, Health, HealthTracker, Published, Replay, StreamState,
        Subscription,
    },
    channel::{Channel, Keys},
    config::BusConfig,
    cursor::Cursor,
    envelope::{encode_body, EventId, NewEvent},
    error::BusError,
    guard::{check_entity, Guard, Guarded},
    stats::BusStats,
};

const PUBLISH_LUA: &str = include_str!("publish.lua");
const GUARDED_LUA: &str = include_str!("guarded.lua");
/// Replaces one hash and sets its expiry, atomically (KEYS[1]; ARGV[1] ms, then field, value...).
const ANNOUNCE_LUA: &str = "redis.call('DEL', KEYS[1]) \
    if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end \
    redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1";
/// Events per script call: long enough to amortise the round trip, short enough not to hold
/// Redis (single-threaded) for more than about a millisecond.
const EVENTS_PER_CALL: usize = 200;

/// The Redis bus. Cheap to clone; clones share one connection (per cluster node).
#[derive(Clone, Debug)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BusConfig,
    keys: Keys,
    client: Client,
    publish: LuaScript,
    guarded: LuaScript,
    stats: BusStats,
}

/// One script call: events of one channel, with their positions in the caller's batch.
struct Call {
    channel: Channel,
    keys: Vec<String>,
    args: Vec<Value>,
    slots: Vec<usize>,
}

impl RedisBus {
    /// Connects to `config.redis_url`; fails if Redis cannot be reached now.
    pub async fn connect(config: BusConfig) -> Result<Self, BusError> {
        config.validate()?;
        let client = new_client(&config)?;
        client.init().await.map_err(BusError::redis("connect"))?;
        let publish = LuaScript::new(PUBLISH_LUA);
        // Load it everywhere now; after a Redis restart NOSCRIPT falls back to EVAL.
        publish
            .script()
            .load(&client)
            .await
            .map_err(BusError::redis("load the publish script"))?;
        Ok(RedisBus {
            inner: Arc::new(Inner {
                keys: config.keys(),
                config,
                client,
                publish,
                guarded: LuaScript::new(GUARDED_LUA),
                stats: BusStats::default(),
            }),
        })
    }

    /// The Redis names this bus uses.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The bus' Redis client, for a service that keeps state of its own next to the streams
    /// (the stats-aggregator's daily hashes) over the same connection. Only for commands that
    /// do not block: clones share the connection with every publish.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn calls(&self, events: Vec<(Channel, NewEvent)>) -> Vec<Call> {
        let cfg = &self.inner.config;
        let mut calls: Vec<Call> = Vec::new();
        for (slot, (channel, event)) in events.into_iter().enumerate() {
            let open = calls
                .iter()
                .rposition(|c| c.channel == channel && c.slots.len() < EVENTS_PER_CALL);
            let call = match open {
                Some(i) => &mut calls[i],
                None => {
                    calls.push(Call {
                        keys: vec![self.inner.keys.stream(&channel)],
                        args: vec![
                            self.inner.keys.pubsub(&channel).into(),
                            (cfg.retention.max_len as i64).into(),
                            ((cfg.retention.max_age_secs * 1000) as i64).into(),
                            (cfg.dedupe_window_secs as i64).into(),
                        ],
                        slots: Vec::new(),
                        channel,
                    });
                    calls.last_mut().expect("just pushed")
                }
            };
            let key_index = match &event.idempotency_key {
                Some(k) => {
                    call.keys.push(self.inner.keys.dedupe(&call.channel, k));
                    call.keys.len() as i64
                }
                None => 0,
            };
            call.args.push(key_index.into());
            call.args.push(encode_body(&call.channel, &event).into());
            call.slots.push(slot);
        }
        calls
    }

    /// Runs the publish script, loading it again if Redis lost its script cache (a restart).
    async fn run_script(&self, keys: Vec<String>, args: Vec<Value>) -> Result<Value, BusError> {
        self.eval(&self.inner.publish, "publish", keys, args).await
    }

    async fn eval(
        &self,
        script: &LuaScript,
        context: &'static str,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, BusError> {
        script
            .run(&self.inner.client, keys, args)
            .await
            .map_err(BusError::redis(context))
    }

    /// The guarded script: an event (`body`) or only the state change (`None`).
    async fn guarded(
        &self,
        channel: &Channel,
        guard: Guard,
        body: Option<String>,
        key: Option<&str>,
    ) -> Result<Guarded, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        check_entity(&guard.entity)?;
        let cfg = &self.inner.config;
        let k = &self.inner.keys;
        let state_key = k.state(channel, &guard.entity);
        let keys = vec![
            k.stream(channel),
            state_key.clone(),
            key.map_or(state_key, |key| k.dedupe(channel, key)),
        ];
        let args: Vec<Value> = vec![
            k.pubsub(channel).into(),
            (cfg.retention.max_len as i64).into(),
            ((cfg.retention.max_age_secs * 1000) as i64).into(),
            (cfg.dedupe_window_secs as i64).into(),
            if guard.expect.is_some() { "1" } else { "0" }.into(),
            guard.expect.unwrap_or_default().into(),
            guard.set.into(),
            (guard.ttl_secs as i64).into(),
            body.unwrap_or_default().into(),
            if key.is_some() { "1" } else { "0" }.into(),
        ];
        let reply = self.eval(&self.inner.guarded, "guarded publish", keys, args).await?;
        let out = value::guarded_reply(reply)?;
        match &out {
            Guarded::Done(p) if p.duplicate => self.inner.stats.duplicate(),
            Guarded::Done(p) if p.id != EventId::ZERO => self.inner.stats.published(1),
            _ => {}
        }
        Ok(out)
    }

    /// Stores a Node-style event that was already announced by its publisher, once per
    /// `(hash, occurrence)` inside the adoption window.
    pub(crate) async fn adopt(
        &self,
        channel: &Channel,
        body: String,
        dedupe_key: String,
    ) -> Result<Published, BusError> {
        let cfg = &self.inner.config;
        let keys = vec![self.inner.keys.stream(channel), dedupe_key];
        let args: Vec<Value> = vec![
            "".into(),
            (cfg.retention.max_len as i64).into(),
            ((cfg.retention.max_age_secs * 1000) as i64).into(),
            (cfg.adopt_window_secs as i64).into(),
            // KEYS[2]: the dedupe key (KEYS[1] is the stream).
            2i64.into(),
            body.into(),
        ];
        let reply = self.run_script(keys, args).await?;
        let out = value::publish_reply(reply, 1)?;
        if !out[0].duplicate {
            self.inner.stats.adopted();
        }
        Ok(out[0])
    }
}

fn new_client(config: &BusConfig) -> Result<Client, BusError> {
    client_builder(config)?
        .build()
        .map_err(BusError::redis("configure client"))
}

fn client_builder(config: &BusConfig) -> Result<Builder, BusError> {
    let url = config.redis_url.as_deref().unwrap_or_default();
    let fred_config = Config::from_url(url).map_err(BusError::redis("parse redis_url"))?;
    let timeout = config.command_timeout();
    let mut builder = Builder::from_config(fred_config);
    builder
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
            // Plain publishes arrive on this broadcast channel; a bigger buffer rides out bursts.
            p.broadcast_channel_capacity = 16_384;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(3);
            c.internal_command_timeout = Duration::from_secs(3);
            // A publish interrupted by a lost connection is reported, not silently sent again:
            // the caller retries with its idempotency key and gets exactly once.
            c.max_command_attempts = 1;
        })
        // Reconnect forever, 50 ms doubling to 2 s: a bus outlives its Redis' restarts.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    Ok(builder)
}

/// Reads what the gap check needs from `XINFO STREAM` (Redis 7+).
pub(crate) async fn stream_state(client: &Client, key: &str) -> Result<StreamState, BusError> {
    match client.xinfo_stream::<Value, _>(key, false, None).await {
        Err(e) if e.details().to_ascii_lowercase().contains("no such key") => Ok(StreamState {
            exists: false,
            last_generated: EventId::ZERO,
            max_deleted: EventId::ZERO,
            first_entry: None,
        }),
        Err(e) => Err(BusError::Redis {
            context: "XINFO STREAM",
            source: e,
        }),
        Ok(v) => value::stream_state(v),
    }
}

impl Bus for RedisBus {
    async fn publish(&self, channel: &Channel, event: NewEvent) -> Result<Published, BusError> {
        Ok(self.publish_batch(vec![(channel.clone(), event)]).await?.remove(0))
    }

    async fn publish_batch(&self, events: Vec<(Channel, NewEvent)>) -> Result<Vec<Published>, BusError> {
        for (channel, event) in &events {
            check_event(&self.inner.config, channel, event)?;
        }
        let total = events.len();
        let calls = self.calls(events);
        let mut out = vec![
            Published {
                id: EventId::ZERO,
                duplicate: false
            };
            total
        ];
        // Independent script calls run concurrently; fred pipelines them on each connection, and
        // calls of one channel keep their order (one connection per node, FIFO).
        let replies =
            futures::future::join_all(calls.iter().map(|c| self.run_script(c.keys.clone(), c.args.clone()))).await;
        for (call, reply) in calls.iter().zip(replies) {
            let results = value::publish_reply(reply?, call.slots.len())?;
            for (slot, r) in call.slots.iter().zip(results) {
                if r.duplicate {
                    self.inner.stats.duplicate();
                } else {
                    self.inner.stats.published(1);
                }
                out[*slot] = r;
            }
        }
        Ok(out)
    }

    async fn subscribe(&self, channels: &[Channel], from: Option<&Cursor>) -> Result<Subscription, BusError> {
        check_channels(&self.inner.config, channels)?;
        // Resolve "now" before returning, so every event stored after this call is delivered.
        let mut positions = Vec::with_capacity(channels.len());
        for c in channels {
            let pos = match from.and_then(|f| f.get(c)) {
                Some(pos) => pos,
                None => {
                    stream_state(&self.inner.client, &self.inner.keys.stream(c))
                        .await?
                        .last_generated
                }
            };
            positions.push((c.clone(), pos));
        }
        let (tx, rx) = mpsc::channel(self.inner.config.read_batch);
        let (health, health_rx) = HealthTracker::new();
        let stop = CancellationToken::new();
        reader::spawn_readers(self.clone(), positions, tx, health.clone(), stop.clone());
        if self.inner.config.adopt_plain_publishes {
            if let Err(e) = adopt::spawn_adopter(self.clone(), channels.to_vec(), health, stop.clone()).await {
                stop.cancel(); // the readers started above must not outlive the failed call
                return Err(e);
            }
        }
        Ok(Subscription::new(rx, health_rx, stop))
    }

    async fn replay(&self, channel: &Channel, after: EventId, limit: usize) -> Result<Replay, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        let key = self.inner.keys.stream(channel);
        let client = &self.inner.client;
        // Gap check first: an entry trimmed after the check is still caught by the next call's.
        let state = stream_state(client, &key).await?;
        if let Some(resume_from) = gap_check(after, &state) {
            self.inner.stats.resync();
            return Ok(Replay {
                resync: Some(resume_from),
                oldest: state.first_entry,
                last: after,
                ..Replay::default()
            });
        }
        let limit = limit.max(1);
        let reply: Value = client
            .xrange(&key, format!("({after}"), "+", Some(limit as u64))
            .await
            .map_err(BusError::redis("XRANGE"))?;
        let entries = value::entries(reply)?;
        let mut page = Replay {
            last: entries.last().map_or(after, |e| e.id),
            at_head: entries.len() < limit,
            ..Replay::default()
        };
        for e in entries {
            match reader::classify(self, channel, e.id, e.body) {
                Ok(env) => page.events.push(Arc::new(env)),
                Err(kind) => page.malformed.push((e.id, kind)),
            }
        }
        Ok(page)
    }

    async fn publish_guarded(&self, channel: &Channel, event: NewEvent, guard: Guard) -> Result<Guarded, BusError> {
        check_event(&self.inner.config, channel, &event)?;
        let body = encode_body(channel, &event);
        self.guarded(channel, guard, Some(body), event.idempotency_key.as_deref())
            .await
    }

    async fn set_state(&self, channel: &Channel, guard: Guard) -> Result<Guarded, BusError> {
        let out = self.guarded(channel, guard, None, None).await?;
        Ok(match out {
            Guarded::Done(_) => {
                let state = stream_state(&self.inner.client, &self.inner.keys.stream(channel)).await?;
                Guarded::Done(Published {
                    id: state.last_generated,
                    duplicate: false,
                })
            }
            conflict => conflict,
        })
    }

    async fn state(&self, channel: &Channel, entity: &str) -> Result<Option<String>, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        check_entity(entity)?;
        self.inner
            .client
            .get(self.inner.keys.state(channel, entity))
            .await
            .map_err(BusError::redis("GET state"))
    }

    async fn published_with(&self, channel: &Channel, idempotency_key: &str) -> Result<Option<EventId>, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        let v: Option<String> = self
            .inner
            .client
            .get(self.inner.keys.dedupe(channel, idempotency_key))
            .await
            .map_err(BusError::redis("GET dedupe"))?;
        v.map(|id| {
            id.parse().map_err(|e| BusError::Protocol {
                context: "idempotency key",
                detail: format!("{e}"),
            })
        })
        .transpose()
    }

    async fn head(&self, channels: &[Channel]) -> Result<Cursor, BusError> {
        check_channels(&self.inner.config, channels)?;
        let mut cursor = Cursor::new();
        for c in channels {
            let state = stream_state(&self.inner.client, &self.inner.keys.stream(c)).await?;
            cursor.set(c.clone(), state.last_generated);
        }
        Ok(cursor)
    }

    async fn announce(&self, kind: &str, instance: &str, figures: &Figures, ttl: Duration) -> Result<(), BusError> {
        let (key, index) = self.presence_keys(kind, instance);
        let ttl_ms = ttl.as_millis().max(1) as i64;
        let mut args: Vec<Value> = vec![ttl_ms.into()];
        for (k, v) in figures {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        let client = &self.inner.client;
        client
            .eval::<Value, _, _, _>(ANNOUNCE_LUA, vec![key], args)
            .await
            .map_err(BusError::redis("announce"))?;
        let expires = now_ms() + ttl_ms;
        client
            .zadd::<Value, _, _>(&index, None, None, false, false, (expires as f64, instance))
            .await
            .map_err(BusError::redis("announce (index)"))?;
        Ok(())
    }

    async fn withdraw(&self, kind: &str, instance: &str) -> Result<(), BusError> {
        let (key, index) = self.presence_keys(kind, instance);
        let client = &self.inner.client;
        client
            .del::<Value, _>(&key)
            .await
            .map_err(BusError::redis("withdraw"))?;
        client
            .zrem::<Value, _, _>(&index, instance)
            .await
            .map_err(BusError::redis("withdraw (index)"))?;
        Ok(())
    }

    async fn roster(&self, kind: &str) -> Result<Vec<(String, Figures)>, BusError> {
        let (_, index) = self.presence_keys(kind, "");
        let client = &self.inner.client;
        let now = now_ms() as f64;
        // Forget instances that stopped announcing; their hashes expired by themselves.
        let _: Value = client
            .zremrangebyscore(&index, f64::NEG_INFINITY, now)
            .await
            .map_err(BusError::redis("roster (prune)"))?;
        let names: Vec<String> = client
            .zrangebyscore(&index, now, f64::INFINITY, false, None)
            .await
            .map_err(BusError::redis("roster"))?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let (key, _) = self.presence_keys(kind, &name);
            let figures: std::collections::HashMap<String, String> = client
                .hgetall(&key)
                .await
                .map_err(BusError::redis("roster (figures)"))?;
            if !figures.is_empty() {
                out.push((name, figures.into_iter().collect()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn health(&self) -> Health {
        if self.inner.client.is_connected() {
            Health::Up
        } else {
            Health::Down {
                since: std::time::SystemTime::now(),
                reason: "not connected to redis".into(),
            }
        }
    }

    fn stats(&self) -> &BusStats {
        &self.inner.stats
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

impl RedisBus {
    /// `<prefix><kind>:<instance>` and the index `<prefix><kind>s`.
    fn presence_keys(&self, kind: &str, instance: &str) -> (String, String) {
        let p = self.inner.keys.prefix();
        (format!("{p}{kind}:{instance}"), format!("{p}{kind}s"))
    }

    /// The configuration this bus was opened with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }
}
