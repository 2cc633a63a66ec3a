//! One shard of the hub: the connections of one edge thread, and the fan-out that feeds them
//! there (`crate::edge`). The hub hands each shard every item once; the shard pushes it into the
//! queue of every connection of its own that wants it, waking their streams on its own thread;
//! its heartbeat tick wakes them there too.

use std::sync::{atomic::Ordering::Relaxed, Arc, Mutex};

use event_bus::Channel;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    event::{Item, Span},
    queue::{PushError, Signals},
    registry::{Counts, Entry, Registry},
};
use crate::telemetry::metrics::Metrics;

/// Items a shard may have waiting before the hub waits for it.
pub(crate) const BACKLOG: usize = 1024;

/// Items a shard fans out under one look at its registry.
const BATCH: usize = 256;

/// What every shard's fan-out goes by.
pub(crate) struct Rules {
    /// The connections of every shard, counted for the limits.
    pub(crate) counts: Arc<Mutex<Counts>>,
    pub(crate) metrics: Metrics,
    /// Queue length per connection (for the log of a cut).
    pub(crate) queue: usize,
    pub(crate) latest_wins: Vec<event_bus::Channel>,
    pub(crate) max_collapsed: usize,
}

impl Rules {
    /// Whether `channel` is latest-wins (by its name: a partition's events are its channel's).
    fn is_latest_wins(&self, channel: &Channel) -> bool {
        let name = channel.logical();
        self.latest_wins.iter().any(|c| c.as_str() == name)
    }
}

/// A shard's connections.
pub(crate) struct Shard {
    pub(crate) registry: Arc<Mutex<Registry>>,
}

/// Raises `s` on every connection of the shard.
pub(crate) fn signal_all(shard: &Shard, s: Signals) {
    for c in shard.registry.lock().unwrap().conns.values() {
        c.tx.signal(s);
    }
}

/// Fans out what arrives on `rx` to the connections of `shard` (number `index`) until `stop`
/// fires.
pub(crate) async fn run(
    rules: Arc<Rules>,
    shard: Arc<Shard>,
    index: usize,
    mut rx: mpsc::Receiver<Item>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = stop.cancelled() => break,
        };
        if n == 0 {
            break;
        }
        fan_out(&rules, &shard, index, &batch);
        batch.clear();
    }
}

/// What a fan-out did to one connection besides queueing.
#[derive(Default)]
struct Outcome {
    /// Something was put aside latest-wins.
    collapsed: bool,
    /// Its queue is full: it catches up from the store.
    behind: bool,
    /// Its stream is gone, or cut.
    gone: bool,
}

impl Outcome {
    /// Queues `item` for `c`; true when nothing more is to be queued for it.
    fn push<'a>(
        &mut self,
        rules: &Rules,
        c: &'a Entry,
        queue: &mut Option<super::queue::Pushing<'a>>,
        item: Item,
        latest_wins: bool,
    ) -> bool {
        let Err(e) = queue.get_or_insert_with(|| c.tx.pushing()).push(item) else {
            return false;
        };
        match e {
            PushError::Full(Item::Event(e)) if latest_wins && c.collapsed.put(e.clone(), rules.max_collapsed) => {
                rules.metrics.events_collapsed.inc();
                self.collapsed = true;
                false
            }
            PushError::Full(_) => {
                // Not cut: the stream catches up from the store in place, its socket
                // permitting (a socket that takes nothing is cut by its write deadline).
                c.info.behind.store(true, Relaxed);
                self.behind = true;
                true
            }
            PushError::Closed => {
                self.gone = true;
                true
            }
        }
    }
}

/// A part of a batch as a connection that follows one channel alone takes it.
enum Seg {
    /// Consecutive events of the channel, and their places in the batch.
    Span(Arc<Span>, Vec<usize>),
    /// Another item of the channel (a RESYNC, `PRESENCE`), by its place in the batch.
    Other(usize),
}

/// The fresh items of `channel` in `items`, its events in spans between the others.
fn segments(items: &[Item], fresh: &[bool], channel: &Channel) -> Vec<Seg> {
    let mut segs = Vec::new();
    let (mut events, mut of) = (Vec::new(), Vec::new());
    let close = |segs: &mut Vec<Seg>, events: &mut Vec<_>, of: &mut Vec<usize>| {
        if !events.is_empty() {
            let span = Span::new(channel.clone(), std::mem::take(events));
            segs.push(Seg::Span(Arc::new(span), std::mem::take(of)));
        }
    };
    for (n, item) in items.iter().enumerate() {
        if !fresh[n] || item.channel() != channel {
            continue;
        }
        match item {
            Item::Event(e) => {
                events.push(e.clone());
                of.push(n);
            }
            _ => {
                close(&mut segs, &mut events, &mut of);
                segs.push(Seg::Other(n));
            }
        }
    }
    close(&mut segs, &mut events, &mut of);
    segs
}

/// Fans a batch of items out: each connection's queue locked once for all of them (its stream
/// woken once), in the order they came.
fn fan_out(rules: &Rules, shard: &Shard, index: usize, items: &[Item]) {
    let metrics = &rules.metrics;
    let mut reg = shard.registry.lock().unwrap();
    // An event at or before the shard's position was fanned out already: one the upstream
    // subscription delivered before it stopped following its channel, and delivers again
    // once it follows the channel anew from an older head (subscriptions on demand).
    let fresh: Vec<bool> = items
        .iter()
        .map(|item| match item {
            Item::Event(e) => reg.head.advance_past(&e.env.channel, e.env.id),
            Item::Resync(r) => {
                reg.head.set(r.0.clone(), r.1);
                true
            }
            Item::Presence(_) | Item::Span(_) => true,
        })
        .collect();
    // By the channel: a partition's events are its channel's.
    let latest_wins: Vec<bool> = items.iter().map(|i| rules.is_latest_wins(i.channel())).collect();
    let mut wanted_by = vec![0usize; items.len()];
    let mut cut = Vec::new();
    // The spans of each channel that connections follow alone, made for the first of them
    // (none for a latest-wins channel: its events go one by one).
    let mut spans: Vec<(Channel, Option<Vec<Seg>>)> = Vec::new();
    for (id, c) in &reg.conns {
        // Behind: it reads what it misses from the store, then is queued for again.
        if c.info.behind.load(Relaxed) {
            continue;
        }
        let (mut queue, mut out) = (None, Outcome::default());
        // Following one channel that is not latest-wins: its events as the shard's spans (the
        // channel looked at once per batch, not once per connection).
        let spanned = c.only.as_ref().and_then(|only| {
            let i = match spans.iter().position(|(ch, _)| ch == only) {
                Some(i) => i,
                None => {
                    let spanned = !rules.is_latest_wins(only);
                    spans.push((only.clone(), spanned.then(|| segments(items, &fresh, only))));
                    spans.len() - 1
                }
            };
            spans[i].1.is_some().then_some(i)
        });
        if let Some(i) = spanned {
            for seg in spans[i].1.iter().flatten() {
                let item = match seg {
                    Seg::Span(span, of) => {
                        of.iter().for_each(|&n| wanted_by[n] += 1);
                        Item::Span(span.clone())
                    }
                    Seg::Other(n) => match &items[*n] {
                        Item::Presence(_) if !c.info.presence => continue,
                        item => item.clone(),
                    },
                };
                if out.push(rules, c, &mut queue, item, false) {
                    break;
                }
            }
        } else {
            for (n, item) in items.iter().enumerate() {
                if !fresh[n] {
                    continue;
                }
                let wanted = match (item, &c.only) {
                    (Item::Event(e), Some(only)) => *only == e.env.channel,
                    (Item::Event(e), None) => c.filter.wants(&e.env),
                    (Item::Resync(r), _) => c.filter.follows(&r.0),
                    (Item::Presence(p), _) => c.info.presence && c.filter.follows(&p.0),
                    (Item::Span(_), _) => false,
                };
                if !wanted {
                    continue;
                }
                wanted_by[n] += 1;
                // Once a channel is collapsing for this client, its later events follow them, so
                // the channel's order holds.
                if let (true, Item::Event(e)) = (latest_wins[n], item) {
                    if c.collapsed.holds_channel(&e.env.channel) {
                        if c.collapsed.put(e.clone(), rules.max_collapsed) {
                            metrics.events_collapsed.inc();
                            out.collapsed = true;
                            continue;
                        }
                        c.info.cut.store(true, Relaxed);
                        out.gone = true;
                        break;
                    }
                }
                if out.push(rules, c, &mut queue, item.clone(), latest_wins[n]) {
                    break;
                }
            }
        }
        drop(queue);
        if out.gone {
            cut.push(*id);
        }
        if out.collapsed {
            c.tx.signal(Signals::COLLAPSED);
        }
        if out.behind {
            metrics.streams_behind.inc();
            c.tx.signal(Signals::BEHIND);
        }
    }
    for (item, n) in items.iter().zip(wanted_by) {
        if let Item::Event(e) = item {
            if let Some(t) = e.env.traceparent {
                tracing::debug!(target: "rakuda::trace", trace_id = %t.trace_id_hex(), event_id = %e.env.id, channel = %e.env.channel, shard = index, connections = n, "fanned out");
            }
        }
    }
    let mut gone = Vec::with_capacity(cut.len());
    for id in cut {
        if let Some(c) = reg.conns.remove(&id) {
            if c.info.cut.load(Relaxed) {
                c.info.cut_signal.notify_one();
                metrics.slow_consumer_disconnects.inc();
                tracing::warn!(
                    conn = id,
                    queue = rules.queue,
                    "slow consumer: stream cut, its cursor stays valid"
                );
            }
            gone.push(c.client);
        }
    }
    drop(reg);
    if !gone.is_empty() {
        let mut counts = rules.counts.lock().unwrap();
        for client in &gone {
            counts.release(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, time::Duration};

    use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload};

    use crate::{
        edge::Edge,
        hub::{
            event::Item,
            fan_out::{Hub, HubSettings},
            filter::Filter,
            queue::Signals,
            registry::{Refused, Registration},
        },
        telemetry::{metrics::Metrics, transport::Transport},
    };

    /// Takes items from `reg` until `n` events have come (bounded: each wait is an event).
    async fn events(reg: &Registration, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut taken = VecDeque::new();
        while ids.len() < n {
            let woke = tokio::time::timeout(Duration::from_secs(10), reg.rx.take(&mut taken, 64))
                .await
                .expect("the hub delivers");
            assert!(!woke.closed, "the queue stays open");
            for item in taken.drain(..) {
                match item {
                    Item::Event(e) => ids.push(e.env.id.ms * 1_000_000 + e.env.id.seq),
                    Item::Span(s) => ids.extend(s.events.iter().map(|e| e.env.id.ms * 1_000_000 + e.env.id.seq)),
                    Item::Resync(_) | Item::Presence(_) => panic!("no resync or presence here"),
                }
            }
        }
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_shard_feeds_its_own_connections_every_event_once_and_the_limits_count_every_shard() {
        let bus = event_bus::connect(BusConfig::default()).await.unwrap();
        let edge = Edge::new(2, 0).unwrap();
        let settings = HubSettings {
            channels: vec![Channel::ORDERS],
            on_demand: true,
            follow_grace: Duration::from_secs(30),
            queue: 1024,
            max_connections: 4,
            max_per_client: 2,
            latest_wins: vec![],
            max_collapsed: 16,
            heartbeat: Duration::from_secs(3600),
            edge: Some(edge.shards()),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let hub = Hub::start(&bus, settings, Metrics::new("shard-test"), stop.clone())
            .await
            .unwrap();
        // Registered from each edge thread: on that thread's shard.
        let register = |shard: usize, client: &str| {
            let (hub, client) = (hub.clone(), client.to_owned());
            edge.shards().handle(shard).spawn(async move {
                let filter = std::sync::Arc::new(Filter {
                    channels: vec![Channel::ORDERS],
                    ..Default::default()
                });
                let following = hub.follow(&filter.channels).await.unwrap();
                hub.register(filter, following, false, client, None, Transport::Sse)
            })
        };
        let mut regs = Vec::new();
        for (shard, client) in [(0, "a"), (1, "a"), (0, "b"), (1, "c")] {
            regs.push(register(shard, client).await.unwrap().expect("within the limits"));
        }
        for shard in &hub.inner.shards {
            assert_eq!(shard.registry.lock().unwrap().conns.len(), 2, "two on each shard");
        }
        assert_eq!(hub.connections(), 4);
        // Counted across the shards: the process's limit, and client a's two on two shards.
        assert_eq!(register(0, "d").await.unwrap().err(), Some(Refused::AtCapacity));
        drop(regs.pop());
        assert_eq!(hub.connections(), 3);
        assert_eq!(register(1, "a").await.unwrap().err(), Some(Refused::ClientAtCapacity));
        regs.push(register(1, "c").await.unwrap().expect("room again"));

        let n = 300;
        for i in 0..n {
            let payload = Payload::new(format!("o{i}"), Action::Created);
            bus.publish(&Channel::ORDERS, NewEvent::new(EventType::ORDER_RECEIVED, payload))
                .await
                .unwrap();
        }
        let mut all = Vec::new();
        for reg in &regs {
            let ids = events(reg, n).await;
            assert_eq!(ids.len(), n, "each event once");
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order");
            all.push(ids);
        }
        assert!(all.windows(2).all(|w| w[0] == w[1]), "the same events on every shard");

        // The drain reaches every connection of every shard through its queue.
        hub.drain();
        for reg in &regs {
            let mut taken = VecDeque::new();
            let woke = tokio::time::timeout(Duration::from_secs(10), reg.rx.take(&mut taken, 64))
                .await
                .expect("signalled");
            assert!(woke.signals.has(Signals::DRAIN), "{woke:?}");
        }
        stop.cancel();
    }
}
