//! The hub: one upstream subscription per process, fanned out in-process to every connection.
//!
//! Each event is encoded to JSON once and shared by every connection that wants it. Every
//! connection has a bounded queue; a connection whose queue is full is cut (its stream ends
//! with its cursor intact, and the client resumes from the stream), so a stalled client can
//! neither grow memory without bound nor slow the others.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use event_bus::{AnyBus, Bus, BusError, Channel, Cursor, Delivery, EventId, EventType, Health, SharedEnvelope};
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How a connection's events travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /api/realtime/events`.
    Sse = 0,
    /// `GET /api/realtime/ws`.
    Ws = 1,
}

impl Transport {
    /// Both.
    pub const ALL: [Transport; 2] = [Transport::Sse, Transport::Ws];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }
}

/// An event as the hub shares it: the envelope, its JSON, and its delivered counters.
#[derive(Debug)]
pub struct HubEvent {
    /// The envelope.
    pub env: SharedEnvelope,
    /// `env` as one line of JSON, encoded once.
    pub json: Bytes,
    /// `realtime_events_delivered_total{type, transport}`, resolved once per event, indexed by
    /// [`Transport`].
    pub delivered: [IntCounter; 2],
}

impl HubEvent {
    /// Encodes an envelope for sharing.
    pub fn new(env: SharedEnvelope, metrics: &Metrics) -> Self {
        HubEvent {
            json: Bytes::from(env.to_json()),
            delivered: Transport::ALL.map(|t| {
                metrics
                    .events_delivered
                    .with_label_values(&[env.event_type.as_str(), t.as_str()])
            }),
            env,
        }
    }
}

/// What the hub hands a connection.
#[derive(Clone, Debug)]
pub enum Item {
    /// An event that matches the connection's filter.
    Event(Arc<HubEvent>),
    /// Events of a channel the connection follows are gone; it must reload. Boxed: resyncs
    /// are rare, and a small item keeps every connection's queue small.
    Resync(Box<(Channel, EventId)>),
}

/// What one connection wants: channels, and optionally only some types or entity ids.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Channels followed.
    pub channels: Vec<Channel>,
    /// Only these types, if set.
    pub types: Option<HashSet<EventType>>,
    /// Only events about these entities (`payload.id`), if set.
    pub ids: Option<HashSet<String>>,
    /// The user's view of the private notification channel (also in `channels`): its events
    /// reach the stream only when they are for this user, and `types`/`ids` do not apply to
    /// them (they select among the public channels' events).
    pub private: Option<notifications::Private>,
}

impl Filter {
    /// Whether the connection follows `channel` at all.
    pub fn follows(&self, channel: &Channel) -> bool {
        self.channels.contains(channel)
    }

    /// Whether the connection wants this event.
    pub fn wants(&self, env: &event_bus::Envelope) -> bool {
        if let Some(p) = &self.private {
            if env.channel == p.channel {
                return notifications::owner(env) == Some(p.user.as_str());
            }
        }
        self.follows(&env.channel)
            && self.types.as_ref().is_none_or(|t| t.contains(&env.event_type))
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&env.payload.id))
    }
}

/// What the admin endpoint shows of a connection.
#[derive(Debug, Serialize)]
pub struct ConnInfo {
    /// Connection id (also in the logs).
    pub id: u64,
    /// The authenticated user (`dev` in `AUTH_MODE=none`).
    pub user: Option<String>,
    /// Channels followed.
    pub channels: Vec<String>,
    /// When it opened.
    pub since: DateTime<Utc>,
    /// Events written to it.
    pub events_sent: AtomicU64,
    /// It resumed from a cursor.
    pub resumed: bool,
    /// SSE or WebSocket.
    pub transport: Transport,
    /// It was cut for being too slow.
    #[serde(skip)]
    pub cut: AtomicBool,
}

/// Latest-wins overflow of one connection: state-like events that did not fit its queue, one
/// per (channel, entity), oldest superseded. Shared by the hub (writer) and the stream (reader).
#[derive(Debug, Default)]
pub struct Collapsed {
    /// Set while anything is put aside: the fan-out's lock-free fast path for the usual case.
    active: AtomicBool,
    latest: Mutex<HashMap<(Channel, String), Arc<HubEvent>>>,
    /// Wakes the stream when something was put aside.
    pub notify: tokio::sync::Notify,
}

impl Collapsed {
    /// Takes everything put aside, oldest first.
    pub fn take(&self) -> Vec<Arc<HubEvent>> {
        if !self.active.load(Relaxed) {
            return Vec::new();
        }
        let mut latest = self.latest.lock().unwrap();
        self.active.store(false, Relaxed);
        let mut v: Vec<_> = latest.drain().map(|(_, e)| e).collect();
        drop(latest);
        v.sort_by_key(|e| e.env.id);
        v
    }

    fn holds_channel(&self, channel: &Channel) -> bool {
        self.active.load(Relaxed) && self.latest.lock().unwrap().keys().any(|(c, _)| c == channel)
    }

    /// Puts an event aside; false if the map is already at `max` entities.
    fn put(&self, ev: Arc<HubEvent>, max: usize) -> bool {
        let mut latest = self.latest.lock().unwrap();
        let key = (ev.env.channel.clone(), ev.env.payload.id.clone());
        if latest.len() >= max && !latest.contains_key(&key) {
            return false;
        }
        latest.insert(key, ev);
        self.active.store(true, Relaxed);
        drop(latest);
        self.notify.notify_one();
        true
    }
}

struct Entry {
    filter: Arc<Filter>,
    tx: mpsc::Sender<Item>,
    info: Arc<ConnInfo>,
    client: String,
    collapsed: Arc<Collapsed>,
}

struct Registry {
    conns: HashMap<u64, Entry>,
    per_client: HashMap<String, usize>,
    /// The hub's position: the last event it fanned out, per channel.
    head: Cursor,
}

struct Inner {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    metrics: Metrics,
    queue: usize,
    max_connections: usize,
    max_per_client: usize,
    latest_wins: Vec<Channel>,
    max_collapsed: usize,
    upstream: watch::Receiver<Health>,
    heartbeat: watch::Sender<u64>,
}

/// The fan-out hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("connections", &self.connections()).finish()
    }
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The process has as many streams as it may.
    AtCapacity,
    /// This client (IP, later user) has as many streams as it may.
    ClientAtCapacity,
}

/// Settings of a hub.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Channels the hub follows.
    pub channels: Vec<Channel>,
    /// Queue length per connection.
    pub queue: usize,
    /// Connections allowed.
    pub max_connections: usize,
    /// Connections allowed per client key.
    pub max_per_client: usize,
    /// Channels whose events are states (latest value per entity is what matters): a lagging
    /// client gets the latest per entity instead of being cut.
    pub latest_wins: Vec<Channel>,
    /// Entities one lagging client may have put aside before it is cut anyway.
    pub max_collapsed: usize,
    /// Heartbeat tick.
    pub heartbeat: Duration,
}

impl Hub {
    /// Subscribes upstream from the current head and starts fanning out until `stop` fires.
    pub async fn start(
        bus: &AnyBus,
        settings: HubSettings,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Result<Hub, BusError> {
        let head = bus.head(&settings.channels).await?;
        let mut sub = bus.subscribe(&settings.channels, Some(&head)).await?;
        let upstream = sub.health();
        let hub = Hub {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry {
                    conns: HashMap::new(),
                    per_client: HashMap::new(),
                    head,
                }),
                next_id: AtomicU64::new(1),
                metrics,
                queue: settings.queue,
                max_connections: settings.max_connections,
                max_per_client: settings.max_per_client,
                latest_wins: settings.latest_wins.clone(),
                max_collapsed: settings.max_collapsed,
                upstream: upstream.clone(),
                heartbeat: watch::channel(0).0,
            }),
        };
        let fan_out = {
            let hub = hub.clone();
            let stop = stop.clone();
            async move {
                loop {
                    let d = tokio::select! {
                        d = sub.next() => d,
                        _ = stop.cancelled() => break,
                    };
                    match d {
                        Some(d) => hub.fan_out(d),
                        None => break,
                    }
                }
            }
        };
        tokio::spawn(fan_out);
        // One shared heartbeat tick for every stream: no timer per connection.
        let ticker = {
            let hub = hub.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(settings.heartbeat);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => hub.inner.heartbeat.send_modify(|n| *n += 1),
                        _ = stop.cancelled() => break,
                    }
                }
            }
        };
        tokio::spawn(ticker);
        let health = {
            let metrics = hub.inner.metrics.clone();
            let mut upstream = upstream;
            async move {
                loop {
                    let up = upstream.borrow_and_update().is_up();
                    metrics.upstream_up.set(up as i64);
                    if !up {
                        tracing::warn!(health = ?*upstream.borrow(), "upstream subscription is down; readiness fails");
                    }
                    tokio::select! {
                        changed = upstream.changed() => if changed.is_err() { break },
                        _ = stop.cancelled() => break,
                    }
                }
            }
        };
        tokio::spawn(health);
        Ok(hub)
    }

    fn fan_out(&self, d: Delivery) {
        let metrics = &self.inner.metrics;
        let (item, channel) = match d {
            Delivery::Event(env) => {
                let channel = env.channel.clone();
                (Item::Event(Arc::new(HubEvent::new(env, metrics))), channel)
            }
            Delivery::Resync { channel, resume_from } => {
                (Item::Resync(Box::new((channel.clone(), resume_from))), channel)
            }
        };
        let mut reg = self.inner.registry.lock().unwrap();
        match &item {
            Item::Event(e) => reg.head.advance(&channel, e.env.id),
            Item::Resync(r) => reg.head.set(channel.clone(), r.1),
        }
        let latest_wins = self.inner.latest_wins.contains(&channel);
        let mut cut = Vec::new();
        for (id, c) in &reg.conns {
            let wanted = match &item {
                Item::Event(e) => c.filter.wants(&e.env),
                Item::Resync(_) => c.filter.follows(&channel),
            };
            if !wanted {
                continue;
            }
            // Once a channel is collapsing for this client, its later events follow them, so
            // the channel's order holds.
            if let (true, Item::Event(e)) = (latest_wins, &item) {
                if c.collapsed.holds_channel(&channel) {
                    if c.collapsed.put(e.clone(), self.inner.max_collapsed) {
                        metrics.events_collapsed.inc();
                    } else {
                        c.info.cut.store(true, Relaxed);
                        cut.push(*id);
                    }
                    continue;
                }
            }
            match c.tx.try_send(item.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => match item {
                    Item::Event(e) if latest_wins && c.collapsed.put(e.clone(), self.inner.max_collapsed) => {
                        metrics.events_collapsed.inc();
                    }
                    _ => {
                        c.info.cut.store(true, Relaxed);
                        cut.push(*id);
                    }
                },
                Err(mpsc::error::TrySendError::Closed(_)) => cut.push(*id),
            }
        }
        for id in cut {
            if let Some(c) = reg.remove(id) {
                if c.info.cut.load(Relaxed) {
                    metrics.slow_consumer_disconnects.inc();
                    tracing::warn!(
                        conn = id,
                        queue = self.inner.queue,
                        "slow consumer: stream cut, its cursor stays valid"
                    );
                }
            }
        }
    }

    /// Registers a connection of `client` (an IP, later a user); its queue receives every wanted
    /// item fanned out from now on.
    pub fn register(
        &self,
        filter: Arc<Filter>,
        resumed: bool,
        client: String,
        user: Option<String>,
        transport: Transport,
    ) -> Result<Registration, Refused> {
        let (tx, rx) = mpsc::channel(self.inner.queue);
        let collapsed = Arc::new(Collapsed::default());
        let id = self.inner.next_id.fetch_add(1, Relaxed);
        let info = Arc::new(ConnInfo {
            id,
            user,
            channels: filter.channels.iter().map(|c| c.to_string()).collect(),
            since: Utc::now(),
            events_sent: AtomicU64::new(0),
            resumed,
            transport,
            cut: AtomicBool::new(false),
        });
        let head = {
            let mut reg = self.inner.registry.lock().unwrap();
            if reg.conns.len() >= self.inner.max_connections {
                return Err(Refused::AtCapacity);
            }
            let mine = reg.per_client.entry(client.clone()).or_default();
            if *mine >= self.inner.max_per_client {
                return Err(Refused::ClientAtCapacity);
            }
            *mine += 1;
            reg.conns.insert(
                id,
                Entry {
                    filter: filter.clone(),
                    tx,
                    info: info.clone(),
                    client,
                    collapsed: collapsed.clone(),
                },
            );
            reg.head.restricted_to(&filter.channels)
        };
        let label = [transport.as_str()];
        self.inner.metrics.connections_active.with_label_values(&label).inc();
        self.inner.metrics.connections_total.with_label_values(&label).inc();
        Ok(Registration {
            hub: self.clone(),
            info,
            rx,
            head,
            collapsed,
        })
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.registry.lock().unwrap().conns.len()
    }

    /// What the admin endpoint lists.
    pub fn connection_infos(&self) -> Vec<Arc<ConnInfo>> {
        let reg = self.inner.registry.lock().unwrap();
        let mut v: Vec<_> = reg.conns.values().map(|c| c.info.clone()).collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Whether the upstream subscription works.
    pub fn upstream(&self) -> Health {
        self.inner.upstream.borrow().clone()
    }

    /// The shared heartbeat tick.
    pub fn heartbeat(&self) -> watch::Receiver<u64> {
        self.inner.heartbeat.subscribe()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// A registered connection: its queue, where the hub stood when it joined, and its info.
/// Dropping it removes the connection from the hub.
#[derive(Debug)]
pub struct Registration {
    hub: Hub,
    /// Admin info.
    pub info: Arc<ConnInfo>,
    /// Items fanned out to this connection.
    pub rx: mpsc::Receiver<Item>,
    /// The hub's position in the connection's channels when it joined: every later event
    /// arrives through `rx` (or, for a lagging client of a latest-wins channel, `collapsed`).
    pub head: Cursor,
    /// State events put aside, latest per entity, when `rx` was full.
    pub collapsed: Arc<Collapsed>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.inner.registry.lock().unwrap().remove(self.info.id);
        self.hub
            .inner
            .metrics
            .connections_active
            .with_label_values(&[self.info.transport.as_str()])
            .dec();
    }
}

impl Registry {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&e.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&e.client);
            }
        }
        Some(e)
    }
}
