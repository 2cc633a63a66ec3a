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
use event_bus::{AnyBus, Broker, BusError, Channel, Delivery, Health};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    collapsed::Collapsed,
    event::{HubEvent, Item},
    filter::Filter,
    follows::{Following, Follows},
    queue::{queue, Signals},
    registry::{ConnInfo, Entry, Refused, Registration, Registry},
    shard::{self, Rules, Shard},
};
use crate::{
    edge::Shards,
    telemetry::{metrics::Metrics, transport::Transport},
};

pub(crate) struct Inner {
    /// One per edge thread (one in all without an edge).
    pub(crate) shards: Vec<Arc<Shard>>,
    edge: Option<Shards>,
    /// What every shard's fan-out goes by.
    pub(crate) rules: Arc<Rules>,
    next_id: AtomicU64,
    max_connections: usize,
    max_per_client: usize,
    upstream: watch::Receiver<Health>,
    /// [`Hub::drain`] was called.
    pub(crate) draining: AtomicBool,
    /// The channels followed on demand: all, or (`subscriptions_on_demand` off) the
    /// partitions only.
    follows: Arc<Follows>,
    /// The channels followed from the start (none with `subscriptions_on_demand`).
    from_start: Vec<Channel>,
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

/// Settings of a hub.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Channels the hub follows: from the start, or (`on_demand`) while a stream needs them.
    pub channels: Vec<Channel>,
    /// Follow each channel only while a stream needs it, and `follow_grace` after.
    pub on_demand: bool,
    /// How long a channel no stream needs is still followed.
    pub follow_grace: Duration,
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
    /// The edge's shards: a fan-out runs on each, for the streams that run there; `None`: one
    /// fan-out on the caller's runtime.
    pub edge: Option<Shards>,
}

impl Hub {
    /// Subscribes upstream from the current head and starts fanning out until `stop` fires.
    pub async fn start(
        bus: &AnyBus,
        settings: HubSettings,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Result<Hub, BusError> {
        // Every stream of every channel (a channel's partitions, if it has them).
        let from_start: Vec<Channel> = if settings.on_demand {
            Vec::new()
        } else {
            bus.config().streams(&settings.channels)
        };
        let head = bus.head(&from_start).await?;
        let mut sub = bus.subscribe(&from_start, Some(&head)).await?;
        let upstream = sub.health();
        let handles: Vec<_> = match &settings.edge {
            Some(edge) => (0..edge.len()).map(|i| edge.handle(i).clone()).collect(),
            None => vec![tokio::runtime::Handle::current()],
        };
        let shards: Vec<Arc<Shard>> = handles
            .iter()
            .map(|_| {
                Arc::new(Shard {
                    registry: Arc::new(Mutex::new(Registry {
                        conns: HashMap::new(),
                        head: head.clone(),
                    })),
                })
            })
            .collect();
        // Partitions (a user's private events) are followed on demand in either mode.
        let follows = {
            let shards = shards.clone();
            Follows::new(
                bus.clone(),
                sub.follower(),
                Box::new(move |c, at| {
                    for shard in &shards {
                        let head = &mut shard.registry.lock().unwrap().head;
                        match at {
                            Some(at) => head.set(c.clone(), at),
                            None => head.remove(c),
                        }
                    }
                }),
                settings.follow_grace,
                metrics.channels_followed.clone(),
                from_start.len(),
            )
        };
        tokio::spawn(follows.clone().run(stop.clone()));
        let hub = Hub {
            inner: Arc::new(Inner {
                shards,
                edge: settings.edge.clone(),
                rules: Arc::new(Rules {
                    counts: Arc::default(),
                    metrics,
                    queue: settings.queue,
                    latest_wins: settings.latest_wins.clone(),
                    max_collapsed: settings.max_collapsed,
                }),
                next_id: AtomicU64::new(1),
                max_connections: settings.max_connections,
                max_per_client: settings.max_per_client,
                upstream: upstream.clone(),
                draining: AtomicBool::new(false),
                follows,
                from_start,
            }),
        };
        let mut feeds = Vec::new();
        for (i, rt) in handles.iter().enumerate() {
            let (tx, rx) = mpsc::channel(shard::BACKLOG);
            feeds.push(tx);
            let shard = &hub.inner.shards[i];
            rt.spawn(shard::run(hub.inner.rules.clone(), shard.clone(), i, rx, stop.clone()));
            // One heartbeat tick per shard, on it: no timer per connection, no wake across
            // threads. When the hub stops, its streams are told so.
            let (shard, stop, every) = (shard.clone(), stop.clone(), settings.heartbeat);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => shard::signal_all(&shard, Signals::HEARTBEAT),
                        _ = stop.cancelled() => break,
                    }
                }
                shard::signal_all(&shard, Signals::STOP);
            });
        }
        // The subscription's reader: each delivery made into an item once (an event encoded
        // once), handed to every shard.
        let reader = {
            let hub = hub.clone();
            let stop = stop.clone();
            async move {
                loop {
                    let d = tokio::select! {
                        d = sub.next() => d,
                        _ = stop.cancelled() => break,
                    };
                    let Some(d) = d else { break };
                    let item = hub.item(d);
                    let hop = hub.hop(&item);
                    for (i, feed) in feeds.iter().enumerate() {
                        let item = match &item {
                            Item::Event(e) if i > 0 => Item::Event(Arc::new(e.for_another_shard())),
                            _ => item.clone(),
                        };
                        // Waits while a shard is that far behind: the subscription's own bound
                        // then holds the rest.
                        if feed.send(item).await.is_err() {
                            return;
                        }
                    }
                    drop(hop);
                }
            }
        };
        tokio::spawn(reader);
        let health = {
            let metrics = hub.inner.rules.metrics.clone();
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

    /// Follows `channels` upstream unless they are already (on demand); the hold keeps them
    /// followed while it lives. A stream holds its channels before it registers.
    pub async fn follow(&self, channels: &[Channel]) -> Result<Following, BusError> {
        let start = &self.inner.from_start;
        let rest: Vec<Channel> = channels.iter().filter(|c| !start.contains(c)).cloned().collect();
        if rest.is_empty() {
            return Ok(Following::always());
        }
        self.inner.follows.follow(&rest).await
    }

    /// Registers a connection of `client` (its user, or its IP), holding its channels
    /// (`following`, from [`Hub::follow`]); its queue receives every wanted item fanned out
    /// from now on.
    pub fn register(
        &self,
        filter: Arc<Filter>,
        following: Following,
        resumed: bool,
        client: String,
        user: Option<String>,
        transport: Transport,
    ) -> Result<Registration, Refused> {
        let (tx, rx) = queue(self.inner.rules.queue);
        let collapsed = Arc::new(Collapsed::default());
        let id = self.inner.next_id.fetch_add(1, Relaxed);
        let info = Arc::new(ConnInfo {
            id,
            user,
            channels: super::filter::logical_names(&filter.channels),
            since: Utc::now(),
            events_sent: AtomicU64::new(0),
            resumed,
            transport,
            cut: AtomicBool::new(false),
            shed: AtomicBool::new(false),
            behind: AtomicBool::new(false),
            cut_signal: tokio::sync::Notify::new(),
            presence: filter.presence,
        });
        self.inner
            .rules
            .counts
            .lock()
            .unwrap()
            .take(&client, self.inner.max_connections, self.inner.max_per_client)?;
        let shard = &self.inner.shards[self.shard()];
        let head = {
            let mut reg = shard.registry.lock().unwrap();
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
            if self.inner.draining.load(Relaxed) {
                reg.conns[&id].tx.signal(Signals::DRAIN);
            }
            reg.head.restricted_to(&filter.channels)
        };
        let label = [transport.as_str()];
        let active = self.inner.rules.metrics.connections_active.with_label_values(&label);
        active.inc();
        self.inner
            .rules
            .metrics
            .connections_total
            .with_label_values(&label)
            .inc();
        Ok(Registration {
            _following: following,
            registry: shard.registry.clone(),
            counts: self.inner.rules.counts.clone(),
            active,
            info,
            rx,
            head,
            collapsed,
        })
    }

    /// The shard of the calling thread (the first, off the edge).
    fn shard(&self) -> usize {
        self.inner.edge.as_ref().and_then(|e| e.current()).unwrap_or(0)
    }

    /// A delivery as the shards take it: an event encoded once, or a RESYNC.
    fn item(&self, d: Delivery) -> Item {
        match d {
            Delivery::Event(env) => Item::Event(Arc::new(HubEvent::new(env, &self.inner.rules.metrics))),
            Delivery::Resync { channel, resume_from } => Item::Resync(Box::new((channel, resume_from))),
        }
    }

    /// The event's hop here, a span when spans are exported.
    fn hop(&self, item: &Item) -> Option<service_kit::trace::Hop> {
        let Item::Event(e) = item else { return None };
        let t = e.env.traceparent?;
        if !service_kit::trace::exporting() {
            return None;
        }
        let attributes = [
            ("rakuda.event_id", e.env.id.to_string()),
            ("rakuda.channel", e.env.channel.to_string()),
        ];
        Some(service_kit::trace::Hop::start(
            "fan-out",
            service_kit::trace::Kind::Consumer,
            Some((t.trace_id(), t.span_id())),
            &attributes,
        ))
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.rules.counts.lock().unwrap().total
    }

    /// Whether the upstream subscription works.
    pub fn upstream(&self) -> Health {
        self.inner.upstream.borrow().clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.rules.metrics
    }
}
