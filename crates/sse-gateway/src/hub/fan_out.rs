//! The hub: one upstream subscription per process, fanned out in-process to every connection.
//!
//! Each event is encoded to JSON once and shared by every connection that wants it. Every
//! connection has a bounded queue; a connection whose queue is full is cut (its stream ends
//! with its cursor intact, and the client resumes from the stream), so a stalled client can
//! neither grow memory without bound nor slow the others.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::Utc;
use event_bus::{AnyBus, Bus, BusError, Channel, Delivery, Health};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    collapsed::Collapsed,
    event::{HubEvent, Item},
    filter::Filter,
    queue::{queue, PushError},
    registry::{ConnInfo, Entry, Registration, Registry},
    transport::Transport,
};
use crate::telemetry::metrics::Metrics;

pub(crate) struct Inner {
    pub(crate) registry: Arc<Mutex<Registry>>,
    next_id: AtomicU64,
    pub(crate) metrics: Metrics,
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
    pub(crate) inner: Arc<Inner>,
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
    /// This client (its user, or its IP without tokens) has as many streams as it may.
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
    /// The runtime the fan-out runs on (the edge's, with the streams it wakes); `None`: the
    /// caller's.
    pub runtime: Option<tokio::runtime::Handle>,
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
                registry: Arc::new(Mutex::new(Registry {
                    conns: HashMap::new(),
                    per_client: HashMap::new(),
                    head,
                })),
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
        let runtime = settings.runtime.clone().unwrap_or_else(tokio::runtime::Handle::current);
        runtime.spawn(fan_out);
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
        // The event's hop here: named in the trace log, a span when spans are exported.
        let traced = match &item {
            Item::Event(e) => e.env.traceparent.map(|t| (t, e.env.id)),
            Item::Resync(_) => None,
        };
        let hop = traced.filter(|_| service_kit::trace::exporting()).map(|(t, id)| {
            let attributes = [
                ("rakuda.event_id", id.to_string()),
                ("rakuda.channel", channel.to_string()),
            ];
            service_kit::trace::Hop::start(
                "fan-out",
                service_kit::trace::Kind::Consumer,
                Some((t.trace_id(), t.span_id())),
                &attributes,
            )
        });
        let mut wanted_by = 0usize;
        let mut reg = self.inner.registry.lock().unwrap();
        match &item {
            Item::Event(e) => reg.head.advance(&channel, e.env.id),
            Item::Resync(r) => reg.head.set(channel.clone(), r.1),
        }
        let latest_wins = self.inner.latest_wins.contains(&channel);
        let mut cut = Vec::new();
        for (id, c) in &reg.conns {
            let wanted = match (&item, &c.only) {
                (Item::Event(e), Some(only)) => *only == e.env.channel,
                (Item::Event(e), None) => c.filter.wants(&e.env),
                (Item::Resync(_), _) => c.filter.follows(&channel),
            };
            if !wanted {
                continue;
            }
            wanted_by += 1;
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
            match c.tx.push(item.clone()) {
                Ok(()) => {}
                Err(PushError::Full(item)) => match item {
                    Item::Event(e) if latest_wins && c.collapsed.put(e.clone(), self.inner.max_collapsed) => {
                        metrics.events_collapsed.inc();
                    }
                    _ => {
                        c.info.cut.store(true, Relaxed);
                        cut.push(*id);
                    }
                },
                Err(PushError::Closed) => cut.push(*id),
            }
        }
        for id in cut {
            if let Some(c) = reg.remove(id) {
                if c.info.cut.load(Relaxed) {
                    c.info.cut_signal.notify_one();
                    metrics.slow_consumer_disconnects.inc();
                    tracing::warn!(
                        conn = id,
                        queue = self.inner.queue,
                        "slow consumer: stream cut, its cursor stays valid"
                    );
                }
            }
        }
        drop(reg);
        if let Some((t, id)) = traced {
            tracing::debug!(target: "rakuda::trace", trace_id = %t.trace_id_hex(), event_id = %id, %channel, connections = wanted_by, "fanned out");
        }
        drop(hop);
    }

    /// Registers a connection of `client` (its user, or its IP); its queue receives every wanted
    /// item fanned out from now on.
    pub fn register(
        &self,
        filter: Arc<Filter>,
        resumed: bool,
        client: String,
        user: Option<String>,
        transport: Transport,
    ) -> Result<Registration, Refused> {
        let (tx, rx) = queue(self.inner.queue);
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
            cut_signal: tokio::sync::Notify::new(),
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
                    only: filter.only_channel().cloned(),
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
        let active = self.inner.metrics.connections_active.with_label_values(&label);
        active.inc();
        self.inner.metrics.connections_total.with_label_values(&label).inc();
        Ok(Registration {
            registry: self.inner.registry.clone(),
            active,
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
