//! The Redis bus itself: its clients and settings, connecting, the script calls every
//! operation is made of, and the stream's state for the gap rule.

use std::{sync::Arc, time::Duration};

use fred::{
    clients::Client,
    interfaces::{ClientLike, StreamsInterface},
    types::{
        config::{Config, ReconnectError, ReconnectPolicy},
        Builder, ClusterHash, CustomCommand, Value,
    },
};

use super::{
    lane::{Commits, Prepared, EVENTS_PER_CALL},
    script::LuaScript,
    value,
};
use crate::{
    channel::Keys,
    config::BusConfig,
    envelope::{encode_body, EventId, NewEvent},
    error::BusError,
    name::Channel,
    publish::{Guard, Guarded, Published},
    rules::{check_channels, check_entity, StreamState},
    stats::BusStats,
};

const PUBLISH_LUA: &str = include_str!("publish.lua");
const GUARDED_LUA: &str = include_str!("guarded.lua");
/// Replaces one hash and sets its expiry, atomically (KEYS[1]; ARGV[1] ms, then field, value...).
pub(crate) const ANNOUNCE_LUA: &str = "redis.call('DEL', KEYS[1]) \
    if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end \
    redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1";

/// The Redis bus. Cheap to clone; clones share one connection (per cluster node).
#[derive(Clone, Debug)]
pub struct RedisBus {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: BusConfig,
    pub(crate) keys: Keys,
    pub(crate) client: Client,
    pub(crate) publish: LuaScript,
    pub(crate) guarded: LuaScript,
    pub(crate) stats: BusStats,
    /// Each channel's script call in flight and who waits for the next (`commit`).
    pub(crate) commits: Commits,
}

/// Events of one channel for one script call, with their positions in the caller's batch.
pub(crate) struct Call {
    pub(crate) channel: Channel,
    pub(crate) events: Vec<Prepared>,
    pub(crate) slots: Vec<usize>,
}

impl RedisBus {
    /// Connects to `config.redis_url`; fails if Redis cannot be reached now.
    pub async fn connect(config: BusConfig) -> Result<Self, BusError> {
        config.validate()?;
        let client = new_client(&config)?;
        let routing = client.init().await.map_err(BusError::redis("connect"))?;
        keep_routing(client.clone(), routing);
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
                commits: Commits::default(),
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

    /// `events` as script calls: one per channel, of up to [`EVENTS_PER_CALL`] events each.
    pub(crate) fn calls(&self, events: Vec<(Channel, NewEvent)>) -> Vec<Call> {
        let mut calls: Vec<Call> = Vec::new();
        for (slot, (channel, event)) in events.into_iter().enumerate() {
            let open = calls
                .iter()
                .rposition(|c| c.channel == channel && c.slots.len() < EVENTS_PER_CALL);
            let call = match open {
                Some(i) => &mut calls[i],
                None => {
                    calls.push(Call {
                        events: Vec::new(),
                        slots: Vec::new(),
                        channel,
                    });
                    calls.last_mut().expect("just pushed")
                }
            };
            call.events.push(Prepared {
                dedupe: event
                    .idempotency_key
                    .as_deref()
                    .map(|k| self.inner.keys.dedupe(&call.channel, k)),
                body: encode_body(&call.channel, &event),
            });
            call.slots.push(slot);
        }
        calls
    }

    /// Runs the publish script, loading it again if Redis lost its script cache (a restart).
    pub(crate) async fn run_script(&self, keys: Vec<String>, args: Vec<Value>) -> Result<Value, BusError> {
        let slot = self.wait_slot(&keys);
        let reply = self.eval(&self.inner.publish, "publish", keys, args).await?;
        self.replicated(slot).await?;
        Ok(reply)
    }

    /// The Phase 27 channel each event of `channel` is also announced on with a classic
    /// `PUBLISH` (`announce_plain`), or `""`.
    pub(crate) fn plain_announce(&self, channel: &Channel) -> String {
        if self.inner.config.announce_plain {
            self.inner.keys.pubsub(channel)
        } else {
            String::new()
        }
    }

    /// With `wait_replicas`, the hash slot of a script call's first key (its stream), where
    /// the call's `WAIT` must go; `None` (nothing computed) without.
    fn wait_slot(&self, keys: &[String]) -> Option<u16> {
        (self.inner.config.wait_replicas > 0).then(|| fred::util::redis_keyslot(keys[0].as_bytes()))
    }

    /// With `wait_replicas` (`slot` from [`RedisBus::wait_slot`]), waits until that many
    /// replicas have every write made so far on the connection to the slot's node (Redis
    /// `WAIT`, sent to that node in a cluster).
    async fn replicated(&self, slot: Option<u16>) -> Result<(), BusError> {
        let cfg = &self.inner.config;
        let Some(slot) = slot else {
            return Ok(());
        };
        let cmd = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false);
        let got: i64 = self
            .inner
            .client
            .custom(cmd, vec![cfg.wait_replicas as i64, cfg.wait_timeout_ms as i64])
            .await
            .map_err(BusError::redis("WAIT"))?;
        if got < cfg.wait_replicas as i64 {
            return Err(BusError::NotReplicated {
                wanted: cfg.wait_replicas,
                got: got.max(0) as u32,
            });
        }
        Ok(())
    }

    pub(crate) async fn eval(
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
    pub(crate) async fn guarded(
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
            k.live(channel).into(),
            (cfg.retention.max_len as i64).into(),
            ((cfg.retention.max_age_secs * 1000) as i64).into(),
            (cfg.dedupe_window_secs as i64).into(),
            if guard.expect.is_some() { "1" } else { "0" }.into(),
            guard.expect.unwrap_or_default().into(),
            guard.set.into(),
            (guard.ttl_secs as i64).into(),
            body.unwrap_or_default().into(),
            if key.is_some() { "1" } else { "0" }.into(),
            self.plain_announce(channel).into(),
        ];
        let slot = self.wait_slot(&keys);
        let reply = self.eval(&self.inner.guarded, "guarded publish", keys, args).await?;
        let out = value::guarded_reply(reply)?;
        if matches!(out, Guarded::Done(_)) {
            self.replicated(slot).await?;
        }
        match &out {
            Guarded::Done(p) if p.duplicate => self.inner.stats.duplicate(),
            Guarded::Done(p) if p.id != EventId::ZERO => self.inner.stats.published(1),
            _ => {}
        }
        Ok(out)
    }

    /// Stores a Node-style event once per `(hash, occurrence)` inside the adoption window, and
    /// announces it on the shard channel (its publisher announced it on the Phase 27 channel
    /// only, which a subscriber that does not adopt never hears).
    pub(crate) async fn adopt(
        &self,
        channel: &Channel,
        body: String,
        dedupe_key: String,
    ) -> Result<Published, BusError> {
        let cfg = &self.inner.config;
        let keys = vec![self.inner.keys.stream(channel), dedupe_key];
        let args: Vec<Value> = vec![
            self.inner.keys.live(channel).into(),
            "".into(),
            (cfg.retention.max_len as i64).into(),
            ((cfg.retention.max_age_secs * 1000) as i64).into(),
            (cfg.adopt_window_secs as i64).into(),
            (cfg.partition_expiry(channel).as_millis() as i64).into(),
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

/// Keeps a client's routing task running. fred ends it on a redirection it cannot follow (an
/// `ASK` while a slot migrates, in fred 10.1: the retry goes back to the old master until its
/// attempts run out), and every later command would then wait for its timeout. The task is
/// started again, after 50 ms doubling to 1 s; a `QUIT` ends it for good.
pub(crate) fn keep_routing<C>(client: C, mut task: fred::types::ConnectHandle)
where
    C: ClientLike + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = tokio::time::Instant::now();
            match task.await {
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the redis client's routing task ended; starting it again");
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(50);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    task = client.connect();
                }
                // QUIT, or the runtime going away.
                _ => return,
            }
        }
    });
}

fn new_client(config: &BusConfig) -> Result<Client, BusError> {
    client_builder(config)?
        .build()
        .map_err(BusError::redis("configure client"))
}

pub(crate) fn client_builder(config: &BusConfig) -> Result<Builder, BusError> {
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
            // A primary demoted without losing its connections (a partition healed after a
            // failover: the old primary is made a replica) answers writes with READONLY for
            // ever. Such an answer drops the connection, and the reconnection asks Sentinel
            // (or the cluster) where the primary is now.
            c.reconnect_errors = vec![
                ReconnectError::ReadOnly,
                ReconnectError::Loading,
                ReconnectError::ClusterDown,
            ];
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

/// The gap rule for a reader at `pos`: `XINFO STREAM`, and when the rule needs it, whether
/// the entry at `pos` itself is still there (`XRANGE pos pos`). The answer: where to go on
/// after a RESYNC, or `None` when nothing is gone.
pub(crate) async fn gap_at(client: &Client, key: &str, pos: EventId) -> Result<Option<EventId>, BusError> {
    let state = stream_state(client, key).await?;
    if !crate::rules::needs_probe(pos, &state) {
        return Ok(crate::rules::gap_check(pos, &state));
    }
    let reply: Value = client
        .xrange(key, pos.to_string(), pos.to_string(), Some(1))
        .await
        .map_err(BusError::redis("XRANGE (the position's entry)"))?;
    let present = !value::entries(reply)?.is_empty();
    if !crate::rules::entry_lost(pos, &state, present) {
        return Ok(None);
    }
    Ok(Some(before(client, key, pos).await?))
}

/// The newest entry before `pos` (0-0 if none): where a stream that lost `pos` goes on.
pub(crate) async fn before(client: &Client, key: &str, pos: EventId) -> Result<EventId, BusError> {
    let reply: Value = client
        .xrevrange(key, format!("({pos}"), "-", Some(1))
        .await
        .map_err(BusError::redis("XREVRANGE (before a lost entry)"))?;
    Ok(value::entries(reply)?.first().map_or(EventId::ZERO, |e| e.id))
}

pub(crate) fn now_ms() -> i64 {
    crate::envelope::Timestamp::now_ms() as i64
}

impl RedisBus {
    /// `<prefix><kind>:<instance>` and the index `<prefix><kind>s`.
    pub(crate) fn presence_keys(&self, kind: &str, instance: &str) -> (String, String) {
        let p = self.inner.keys.prefix();
        (format!("{p}{kind}:{instance}"), format!("{p}{kind}s"))
    }

    /// The configuration this bus was opened with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }
}
