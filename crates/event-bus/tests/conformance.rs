//! One conformance suite per role of the bus (the broker, presence, per-entity state) for
//! every backend: memory, a real redis-server, and a real three-master Redis Cluster. Every
//! Redis here is started by the test on a free loopback port and stopped when the test ends,
//! pass or fail.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use event_bus::{
    connect, Action, AnyBus, Broker, BusConfig, BusError, Channel, ChannelSpec, Cursor, Delivery, EntityState, EventId,
    EventType, Guard, Guarded, MalformedKind, MemoryBus, NewEvent, Payload, Presence, Retention, Subscription,
    Traceparent,
};
use testkit::{cluster::RedisCluster, RedisServer};

/// How long one expected delivery may take before the test fails (generous: CI is shared).
const PATIENCE: Duration = Duration::from_secs(20);

enum Backend {
    Memory(MemoryBus),
    Redis(RedisServer),
    Cluster(RedisCluster),
}

/// A backend plus a prefix of its own, so cases sharing a Redis cannot see each other's keys.
struct Fixture {
    backend: Backend,
    config: BusConfig,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn base_config(tweak: impl FnOnce(&mut BusConfig)) -> BusConfig {
    let mut c = BusConfig {
        prefix: format!("t{}:rakuda:realtime:", NEXT.fetch_add(1, Ordering::Relaxed)),
        memory_capacity: 100_000,
        ..Default::default()
    };
    c.channels.push(ChannelSpec {
        name: Channel::new("tasks").unwrap(),
        types: vec![],
        partitions: 1,
    });
    c.channels.push(ChannelSpec {
        name: hot(),
        types: vec![],
        partitions: 4,
    });
    tweak(&mut c);
    c
}

impl Fixture {
    fn memory(tweak: impl FnOnce(&mut BusConfig)) -> Self {
        let config = base_config(tweak);
        Fixture {
            backend: Backend::Memory(MemoryBus::new(config.clone()).unwrap()),
            config,
        }
    }

    fn redis(tweak: impl FnOnce(&mut BusConfig)) -> Self {
        let server = RedisServer::start().expect("start redis-server");
        let mut config = base_config(tweak);
        config.redis_url = Some(server.url());
        Fixture {
            backend: Backend::Redis(server),
            config,
        }
    }

    /// A new case on the same cluster: a fresh prefix.
    fn on_cluster(cluster: RedisCluster, tweak: impl FnOnce(&mut BusConfig)) -> Self {
        let mut config = base_config(tweak);
        config.redis_url = Some(cluster.url());
        Fixture {
            backend: Backend::Cluster(cluster),
            config,
        }
    }

    fn into_cluster(self) -> RedisCluster {
        match self.backend {
            Backend::Cluster(c) => c,
            _ => panic!("not a cluster fixture"),
        }
    }

    /// A bus handle: for Redis a new client (as another process would have), for memory the same bus.
    async fn bus(&self) -> AnyBus {
        match &self.backend {
            Backend::Memory(m) => AnyBus::Memory(m.clone()),
            _ => connect(self.config.clone()).await.expect("connect"),
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        match &self.backend {
            Backend::Memory(_) => panic!("no redis-cli for the memory backend"),
            Backend::Redis(s) => s.cli(args).expect("redis-cli"),
            Backend::Cluster(c) => c.cli(args).expect("redis-cli"),
        }
    }

    /// Subscribers of a pub/sub channel, summed over every node (PUBLISH on a cluster node
    /// counts that node's subscribers only).
    fn listeners(&self, name: &str) -> usize {
        let numsub = |s: &RedisServer| -> usize {
            let out = s.cli(&["PUBSUB", "NUMSUB", name]).expect("PUBSUB NUMSUB");
            out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
        };
        match &self.backend {
            Backend::Memory(_) => panic!("no pub/sub in the memory backend"),
            Backend::Redis(s) => numsub(s),
            Backend::Cluster(c) => c.nodes().iter().map(numsub).sum(),
        }
    }

    /// The server that holds `key` (on a cluster, the master of its slot).
    fn owner_of(&mut self, key: &str) -> &mut RedisServer {
        match &mut self.backend {
            Backend::Memory(_) => panic!("no server behind the memory backend"),
            Backend::Redis(s) => s,
            Backend::Cluster(c) => c
                .nodes_mut()
                .iter_mut()
                .find(|n| !n.cli(&["EXISTS", key]).unwrap_or_default().contains("MOVED"))
                .expect("a node owns the slot"),
        }
    }

    /// Publish script calls Redis has run so far (`INFO commandstats`), on one server only.
    fn publish_calls(&self) -> Option<u64> {
        let Backend::Redis(s) = &self.backend else { return None };
        let info = s.cli(&["INFO", "commandstats"]).expect("INFO");
        let calls = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse().expect("a count"))
        };
        Some(calls("evalsha") + calls("eval"))
    }

    fn stream_key(&self, channel: &Channel) -> String {
        self.config.keys().stream(channel)
    }
}

fn event(ty: EventType, id: impl Into<String>) -> NewEvent {
    NewEvent::new(ty, Payload::new(id, Action::Updated))
}

fn order(id: impl Into<String>) -> NewEvent {
    NewEvent::new(EventType::ORDER_RECEIVED, Payload::new(id, Action::Created))
}

/// A channel spread over 4 partitions.
fn hot() -> Channel {
    Channel::new("hot").unwrap()
}

fn tasks() -> Channel {
    Channel::new("tasks").unwrap()
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("no delivery within the time limit")
        .expect("subscription ended")
}

async fn next_event(sub: &mut Subscription) -> event_bus::SharedEnvelope {
    match next(sub).await {
        Delivery::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Receives exactly `n` events (no resync allowed), in arrival order.
async fn take_events(sub: &mut Subscription, n: usize) -> Vec<event_bus::SharedEnvelope> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_event(sub).await);
    }
    out
}

/// Publishes a sentinel and asserts it is the very next delivery: nothing extra is pending.
async fn assert_nothing_more(bus: &AnyBus, sub: &mut Subscription, channel: &Channel) {
    let ty = if *channel == Channel::ORDERS {
        EventType::ORDER_RECEIVED
    } else {
        EventType::new("sentinel").unwrap()
    };
    let sent = bus.publish(channel, event(ty, "sentinel")).await.unwrap();
    let got = next_event(sub).await;
    assert_eq!(
        (got.id, got.payload.id.as_str()),
        (sent.id, "sentinel"),
        "an unexpected event arrived first"
    );
}

// ---------------------------------------------------------------------------------------------
// The cases. Each takes a fixture and panics on the first violated guarantee.
// ---------------------------------------------------------------------------------------------

async fn order_per_channel(f: &Fixture) {
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[Channel::ORDERS, tasks()], None).await.unwrap();
    let mut expected: HashMap<Channel, Vec<String>> = HashMap::new();
    for i in 0..300 {
        let (c, e) = if i % 3 == 0 {
            (tasks(), event(EventType::new("task_created").unwrap(), format!("t{i}")))
        } else {
            (Channel::ORDERS, order(format!("o{i}")))
        };
        expected.entry(c.clone()).or_default().push(e.payload.id.clone());
        bus.publish(&c, e).await.unwrap();
    }
    let got = take_events(&mut sub, 300).await;
    let mut seen: HashMap<Channel, Vec<String>> = HashMap::new();
    let mut last: HashMap<Channel, EventId> = HashMap::new();
    for e in &got {
        let prev = last.insert(e.channel.clone(), e.id).unwrap_or(EventId::ZERO);
        assert!(
            e.id > prev,
            "ids go backwards on {}: {} after {}",
            e.channel,
            e.id,
            prev
        );
        seen.entry(e.channel.clone()).or_default().push(e.payload.id.clone());
    }
    assert_eq!(seen, expected);
    assert_nothing_more(&bus, &mut sub, &Channel::ORDERS).await;
}

async fn replay_from_cursor(f: &Fixture) {
    let bus = f.bus().await;
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(bus.publish(&Channel::ORDERS, order(format!("o{i}"))).await.unwrap().id);
    }
    let mut cursor = Cursor::new();
    cursor.set(Channel::ORDERS, ids[39]);
    // Through the text form, as a browser would send it back.
    let cursor: Cursor = cursor.to_string().parse().unwrap();
    let mut sub = bus.subscribe(&[Channel::ORDERS], Some(&cursor)).await.unwrap();
    let got = take_events(&mut sub, 60).await;
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), ids[40..].to_vec());
    // Then live, and the cursor the deliveries build resumes exactly after the last one.
    let live = bus.publish(&Channel::ORDERS, order("live")).await.unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(e.id, live.id);
    let mut resume = cursor.clone();
    for d in got.iter().cloned().map(Delivery::Event).chain([Delivery::Event(e)]) {
        d.advance(&mut resume);
    }
    assert_eq!(resume.get(&Channel::ORDERS), Some(live.id));
    let after = bus.publish(&Channel::ORDERS, order("after")).await.unwrap();
    let mut sub2 = bus.subscribe(&[Channel::ORDERS], Some(&resume)).await.unwrap();
    assert_eq!(next_event(&mut sub2).await.id, after.id);
    assert_nothing_more(&bus, &mut sub2, &Channel::ORDERS).await;
}

/// 4 publishers x 10k events while subscribers join half-way: one from the cursor taken before
/// the first publish (replay, then live), one from "now" (live only). Neither may see a gap or
/// a duplicate where replay meets live.
async fn seam(f: &Fixture) {
    const PER: usize = 10_000;
    let channels = [Channel::ORDERS, tasks()];
    let bus = f.bus().await;
    let start = bus.head(&channels).await.unwrap();
    let mut publishers = Vec::new();
    let published = std::sync::Arc::new(AtomicU32::new(0));
    let half_way = std::sync::Arc::new(tokio::sync::Notify::new());
    for p in 0..4 {
        let bus = f.bus().await;
        let published = published.clone();
        let half_way = half_way.clone();
        let channel = channels[p % 2].clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..PER {
                let e = if channel == Channel::ORDERS {
                    order(format!("{p}:{i}"))
                } else {
                    event(EventType::new("task_created").unwrap(), format!("{p}:{i}"))
                };
                bus.publish(&channel, e).await.unwrap();
                published.fetch_add(1, Ordering::Relaxed);
                if p == 0 && i == PER / 2 {
                    half_way.notify_one();
                }
                // Let the joining subscriber in while publishing goes on (the memory bus is
                // fast enough to finish before it otherwise).
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), half_way.notified())
        .await
        .expect("publishers did not reach half-way");
    let mut from_start = bus.subscribe(&channels, Some(&start)).await.unwrap();
    let before_join = published.load(Ordering::Relaxed) as usize;
    let mut from_now = bus.subscribe(&channels, None).await.unwrap();
    let after_join = published.load(Ordering::Relaxed) as usize;
    assert!(
        after_join < PER * 4,
        "publishers finished before the subscriber joined; the test proves nothing"
    );

    let all = take_events(&mut from_start, PER * 4).await;
    let mut next_seq = [0usize; 4];
    let mut last_id: HashMap<Channel, EventId> = HashMap::new();
    for e in &all {
        let (p, i) = e.payload.id.split_once(':').unwrap();
        let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
        assert_eq!(
            i, next_seq[p],
            "publisher {p}: expected event {} next, got {i}",
            next_seq[p]
        );
        next_seq[p] += 1;
        let prev = last_id.insert(e.channel.clone(), e.id).unwrap_or(EventId::ZERO);
        assert!(e.id > prev);
    }
    assert_eq!(next_seq, [PER; 4]);

    // The live-only subscriber sees, per publisher, a contiguous run that ends at the last event.
    let mut firsts: [Option<usize>; 4] = [None; 4];
    let mut count = [0usize; 4];
    let mut got = 0;
    for h in publishers {
        h.await.unwrap();
    }
    let expected_live: usize;
    {
        // Count what it must get: everything after its starting point, which we learn from the
        // first event of each publisher it receives; receive until each publisher's last event.
        let mut done = [false; 4];
        while !done.iter().all(|d| *d) {
            let e = next_event(&mut from_now).await;
            got += 1;
            let (p, i) = e.payload.id.split_once(':').unwrap();
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            let first = *firsts[p].get_or_insert(i);
            assert_eq!(
                i,
                first + count[p],
                "publisher {p}: gap or duplicate in the live subscription"
            );
            count[p] += 1;
            done[p] = i == PER - 1;
        }
        expected_live = (0..4).map(|p| PER - firsts[p].unwrap_or(PER)).sum();
    }
    assert_eq!(got, expected_live);
    // It starts at the head when it subscribed: after what was counted before, and at most the
    // four in-flight publishes (stored, not yet counted) before what was counted after.
    assert!(
        got <= PER * 4 - before_join,
        "live subscriber got events from before it joined"
    );
    assert!(
        got + after_join + 4 >= PER * 4,
        "live subscriber missed events published after it joined"
    );
    assert_nothing_more(&bus, &mut from_start, &Channel::ORDERS).await;
}

async fn dedupe(f: &Fixture) {
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[Channel::ORDERS, tasks()], None).await.unwrap();
    let first = bus
        .publish(&Channel::ORDERS, order("o1").with_idempotency_key("orders:job:1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = bus
        .publish(&Channel::ORDERS, order("o1-retry").with_idempotency_key("orders:job:1"))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert!(again.duplicate);
    // The same key on another channel is another event.
    let other = bus
        .publish(
            &tasks(),
            event(EventType::new("task_created").unwrap(), "t1").with_idempotency_key("orders:job:1"),
        )
        .await
        .unwrap();
    assert!(!other.duplicate);
    // Inside one batch, and across batches.
    let batch = bus
        .publish_batch(vec![
            (Channel::ORDERS, order("o2").with_idempotency_key("k2")),
            (Channel::ORDERS, order("o2-dup").with_idempotency_key("k2")),
            (Channel::ORDERS, order("o3")),
            (Channel::ORDERS, order("o1-again").with_idempotency_key("orders:job:1")),
        ])
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|p| p.duplicate).collect::<Vec<_>>(),
        [false, true, false, true]
    );
    assert_eq!(batch[1].id, batch[0].id);
    assert_eq!(batch[3].id, first.id);
    // Order is guaranteed per channel, not across channels.
    let mut got: Vec<String> = take_events(&mut sub, 4)
        .await
        .iter()
        .map(|e| e.payload.id.clone())
        .collect();
    got.sort();
    assert_eq!(got, ["o1", "o2", "o3", "t1"]);
    assert_nothing_more(&bus, &mut sub, &Channel::ORDERS).await;
    assert_eq!(bus.stats().snapshot().duplicates, 3);
}

async fn batch_keeps_order_and_results(f: &Fixture) {
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[Channel::ORDERS, tasks()], None).await.unwrap();
    let events: Vec<(Channel, NewEvent)> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                (Channel::ORDERS, order(format!("{i}")))
            } else {
                (tasks(), event(EventType::new("log_created").unwrap(), format!("{i}")))
            }
        })
        .collect();
    let results = bus.publish_batch(events).await.unwrap();
    assert_eq!(results.len(), 1000);
    let got = take_events(&mut sub, 1000).await;
    let by_payload: HashMap<String, EventId> = got.iter().map(|e| (e.payload.id.clone(), e.id)).collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(by_payload[&i.to_string()], r.id, "result {i} names another event");
    }
    // A bad event in a batch rejects the batch before anything is stored.
    let err = bus
        .publish_batch(vec![
            (Channel::ORDERS, order("x")),
            (Channel::ORDERS, event(EventType::PRICE_CHANGE, "y")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::UnknownType { .. }), "{err}");
    assert_nothing_more(&bus, &mut sub, &Channel::ORDERS).await;
}

/// Publishes of one channel made at the same time each get their own id, every event is
/// stored once, and idempotency holds between them; on Redis they share script calls (the
/// group commit, `crates/event-bus/src/redis/commit.rs`).
async fn concurrent_publishes(f: &Fixture) {
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[tasks()], None).await.unwrap();
    let calls_before = f.publish_calls();
    let log = EventType::new("log_created").unwrap();
    let keyed = |i: usize| {
        let mut e = event(log.clone(), format!("k{i}"));
        e.idempotency_key = Some("same-key".into());
        e
    };
    let results = futures::future::join_all((0..64).map(|i| {
        let bus = &bus;
        let ev = if i % 16 == 5 {
            keyed(i)
        } else {
            event(log.clone(), format!("c{i}"))
        };
        async move { bus.publish(&tasks(), ev).await.unwrap() }
    }))
    .await;
    let keyed_ids: Vec<EventId> = (0..64).filter(|i| i % 16 == 5).map(|i| results[i].id).collect();
    assert!(
        keyed_ids.iter().all(|id| *id == keyed_ids[0]),
        "one id for one key: {keyed_ids:?}"
    );
    assert_eq!(
        (0..64).filter(|i| i % 16 == 5 && !results[*i].duplicate).count(),
        1,
        "one of the keyed publishes is stored, the others are duplicates"
    );
    let stored = 64 - 3;
    let got = take_events(&mut sub, stored).await;
    let by_payload: HashMap<String, EventId> = got.iter().map(|e| (e.payload.id.clone(), e.id)).collect();
    assert_eq!(by_payload.len(), stored, "every event once");
    for (i, r) in results.iter().enumerate().filter(|(i, _)| i % 16 != 5) {
        assert_eq!(
            by_payload[&format!("c{i}")],
            r.id,
            "publish {i} answered another event's id"
        );
    }
    if let Some(before) = calls_before {
        let calls = f.publish_calls().unwrap() - before;
        assert!(
            calls < 64,
            "64 publishes at once took {calls} script calls: none shared one"
        );
    }
    assert_nothing_more(&bus, &mut sub, &tasks()).await;
}

/// Callers that go away while their publishes wait (the first one's call in flight, the
/// others queued behind it) lose nothing for anyone else: the queued events are still stored
/// and the channel takes publishes again.
async fn abandoned_publishes_do_not_stall_the_channel(f: &Fixture) {
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[tasks()], None).await.unwrap();
    let log = EventType::new("log_created").unwrap();
    let channel = tasks();
    let mut batch = Box::pin(futures::future::join_all(
        (0..8).map(|i| bus.publish(&channel, event(log.clone(), format!("gone{i}")))),
    ));
    assert!(
        futures::poll!(batch.as_mut()).is_pending(),
        "a Redis publish answers after a round trip"
    );
    drop(batch);
    let after = tokio::time::timeout(PATIENCE, bus.publish(&tasks(), event(log.clone(), "after")))
        .await
        .expect("the channel takes publishes again")
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let e = next_event(&mut sub).await;
        seen.push(e.payload.id.clone());
        if e.id == after.id {
            break;
        }
    }
    for i in 1..8 {
        assert!(
            seen.contains(&format!("gone{i}")),
            "queued event {i} was dropped: {seen:?}"
        );
    }
    assert_eq!(seen.iter().filter(|s| *s == "after").count(), 1);
}

async fn rejects_unknown_channels_and_types(f: &Fixture) {
    let bus = f.bus().await;
    let nowhere = Channel::new("nowhere").unwrap();
    let err = bus.publish(&nowhere, order("x")).await.unwrap_err();
    assert!(matches!(err, BusError::UnknownChannel(_)), "{err}");
    assert!(err.to_string().contains("nowhere"));
    let err = bus
        .publish(&Channel::ORDERS, event(EventType::PRICE_CHANGE, "x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PRICE_CHANGE"), "{err}");
    let err = bus
        .publish(&Channel::ORDERS, order("x").with_idempotency_key("has space"))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::InvalidIdempotencyKey(_)), "{err}");
    assert!(bus.subscribe(&[nowhere], None).await.is_err());
}

/// A cursor older than retention, or from another store, yields a resync, never silence.
async fn resync_when_too_old(f: &Fixture) {
    let bus = f.bus().await;
    let first = bus.publish(&Channel::ORDERS, order("first")).await.unwrap();
    let batch: Vec<_> = (0..2000).map(|i| (Channel::ORDERS, order(format!("{i}")))).collect();
    let last = *bus.publish_batch(batch).await.unwrap().last().unwrap();
    let mut old = Cursor::new();
    old.set(Channel::ORDERS, first.id);
    let mut sub = bus.subscribe(&[Channel::ORDERS], Some(&old)).await.unwrap();
    match next(&mut sub).await {
        Delivery::Resync { channel, resume_from } => {
            assert_eq!(channel, Channel::ORDERS);
            assert_eq!(resume_from, last.id);
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    assert_nothing_more(&bus, &mut sub, &Channel::ORDERS).await;
    let page = bus.replay(&Channel::ORDERS, first.id, 100).await.unwrap();
    assert!(page.events.is_empty());
    assert!(page.resync.is_some_and(|r| r >= last.id), "{page:?}");

    // A cursor from the future: another store, or one that lost its data.
    let mut future = Cursor::new();
    future.set(Channel::ORDERS, EventId::new(last.id.ms + 10_000_000, 0));
    let mut sub = bus.subscribe(&[Channel::ORDERS], Some(&future)).await.unwrap();
    assert!(matches!(next(&mut sub).await, Delivery::Resync { .. }));
    assert_nothing_more(&bus, &mut sub, &Channel::ORDERS).await;
    assert!(bus.stats().snapshot().resyncs >= 2);
}

/// `replay` pages through stored events after a position, in order, for one-client catch-up.
async fn replay_pages(f: &Fixture) {
    let bus = f.bus().await;
    let batch: Vec<_> = (0..250).map(|i| (Channel::ORDERS, order(format!("{i}")))).collect();
    let ids: Vec<EventId> = bus.publish_batch(batch).await.unwrap().iter().map(|p| p.id).collect();
    let mut after = ids[9];
    let mut got = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = bus.replay(&Channel::ORDERS, after, 100).await.unwrap();
        assert_eq!(page.resync, None);
        pages.push(page.events.len());
        got.extend(page.events.iter().map(|e| e.id));
        match page.events.last() {
            Some(last) if page.events.len() == 100 => after = last.id,
            _ => break,
        }
    }
    assert_eq!(got, ids[10..].to_vec());
    assert_eq!(pages, [100, 100, 40]);
    let at_head = bus.replay(&Channel::ORDERS, *ids.last().unwrap(), 100).await.unwrap();
    assert!(at_head.events.is_empty() && at_head.resync.is_none());
}

/// Instances announce their figures, others read the roster; a withdrawn or expired instance
/// is gone from it.
async fn presence(f: &Fixture) {
    let bus = f.bus().await;
    let figures = |n: &str| -> event_bus::Figures { [("connections".to_owned(), n.to_owned())].into() };
    bus.announce("gateway", "gw-a", &figures("3"), Duration::from_secs(60))
        .await
        .unwrap();
    bus.announce("gateway", "gw-b", &figures("5"), Duration::from_secs(60))
        .await
        .unwrap();
    bus.announce("gateway", "gw-b", &figures("6"), Duration::from_secs(60))
        .await
        .unwrap();
    bus.announce("worker", "w-1", &figures("0"), Duration::from_secs(60))
        .await
        .unwrap();
    let other = f.bus().await;
    let roster = other.roster("gateway").await.unwrap();
    assert_eq!(
        roster,
        vec![("gw-a".to_owned(), figures("3")), ("gw-b".to_owned(), figures("6"))]
    );
    bus.withdraw("gateway", "gw-a").await.unwrap();
    assert_eq!(other.roster("gateway").await.unwrap().len(), 1);
    // An instance that stops announcing disappears when its figures expire (a bounded wait on
    // Redis' clock: there is no event to await).
    bus.announce("gateway", "gw-c", &figures("1"), Duration::from_millis(200))
        .await
        .unwrap();
    assert!(
        testkit::wait_until(PATIENCE, || async {
            !other.roster("gateway").await.unwrap().iter().any(|(n, _)| n == "gw-c")
        })
        .await,
        "an expired instance stayed in the roster"
    );
    assert_eq!(other.roster("worker").await.unwrap().len(), 1);
    if !matches!(f.backend, Backend::Memory(_)) {
        let key = format!("{}gateway:gw-b", f.config.prefix);
        assert_eq!(f.cli(&["HGET", &key, "connections"]), "6", "the contract's hash key");
        let ttl: i64 = f.cli(&["PTTL", &key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    }
}

/// What a running subscription follows changes ([`event_bus::Follower`]): a channel followed
/// from a position gets its events stored after it, then the live ones, once each and in
/// order; unfollowed, it gets nothing more; followed again from where it stood, nothing is
/// missed. A channel the bus does not have is refused.
async fn follow_and_unfollow(f: &Fixture) {
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[tasks()], None).await.unwrap();
    let follower = sub.follower();
    let task = |id: &str| event(EventType::new("task").unwrap(), id);
    let o0 = bus.publish(&Channel::ORDERS, order("o0")).await.unwrap();
    bus.publish(&Channel::ORDERS, order("o1")).await.unwrap();
    follower.follow(Channel::ORDERS, o0.id).await.unwrap();
    bus.publish(&Channel::ORDERS, order("o2")).await.unwrap();
    let ids: Vec<String> = take_events(&mut sub, 2)
        .await
        .iter()
        .map(|e| e.payload.id.clone())
        .collect();
    assert_eq!(ids, ["o1", "o2"], "stored after the position, then live");
    // Following it again changes nothing.
    follower.follow(Channel::ORDERS, EventId::ZERO).await.unwrap();
    follower.unfollow(Channel::ORDERS).await.unwrap();
    bus.publish(&tasks(), task("m1")).await.unwrap();
    assert_eq!(next_event(&mut sub).await.payload.id, "m1");
    let o3 = bus.publish(&Channel::ORDERS, order("o3")).await.unwrap();
    bus.publish(&tasks(), task("m2")).await.unwrap();
    assert_eq!(
        next_event(&mut sub).await.payload.id,
        "m2",
        "an unfollowed channel was delivered"
    );
    let o2 = bus.replay(&Channel::ORDERS, o0.id, 10).await.unwrap().events[1].id;
    assert!(o2 < o3.id);
    follower.follow(Channel::ORDERS, o2).await.unwrap();
    bus.publish(&Channel::ORDERS, order("o4")).await.unwrap();
    let ids: Vec<String> = take_events(&mut sub, 2)
        .await
        .iter()
        .map(|e| e.payload.id.clone())
        .collect();
    assert_eq!(ids, ["o3", "o4"], "followed again from where it stood");
    assert!(matches!(
        follower.follow(Channel::new("nope").unwrap(), EventId::ZERO).await,
        Err(BusError::UnknownChannel(_))
    ));
    assert_nothing_more(&bus, &mut sub, &tasks()).await;
}

/// Partitions of a channel (a user's private events): each its own stream, followed on its
/// own, its events named by the channel in JSON; a partition of an unknown channel is refused.
async fn partitions(f: &Fixture) {
    let bus = f.bus().await;
    let (alice, bob) = (
        Channel::ORDERS.user_partition("alice").unwrap(),
        Channel::ORDERS.user_partition("bob").unwrap(),
    );
    let mut sub = bus.subscribe(&[tasks()], None).await.unwrap();
    let a0 = bus.publish(&alice, order("a0")).await.unwrap();
    bus.publish(&bob, order("b0")).await.unwrap();
    bus.publish(&alice, order("a1")).await.unwrap();
    // Each partition is its own stream: alice's holds only hers.
    let page = bus.replay(&alice, EventId::ZERO, 10).await.unwrap();
    let ids: Vec<&str> = page.events.iter().map(|e| e.payload.id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1"]);
    assert_eq!(page.events[0].channel, alice, "in memory an event knows its partition");
    let json: serde_json::Value = serde_json::from_str(&page.events[0].to_json()).unwrap();
    assert_eq!(json["channel"], "orders", "its JSON names the channel");
    let head = bus.head(&[alice.clone(), bob.clone()]).await.unwrap();
    assert_eq!(head.get(&alice), Some(page.last));
    // Followed from a position: the rest of hers, then live; never bob's.
    sub.follower().follow(alice.clone(), a0.id).await.unwrap();
    bus.publish(&bob, order("b1")).await.unwrap();
    bus.publish(&alice, order("a2")).await.unwrap();
    let got: Vec<String> = take_events(&mut sub, 2)
        .await
        .iter()
        .map(|e| e.payload.id.clone())
        .collect();
    assert_eq!(got, ["a1", "a2"]);
    let nope = Channel::new("nope").unwrap().user_partition("alice").unwrap();
    assert!(matches!(
        bus.publish(&nope, order("x")).await,
        Err(BusError::UnknownChannel(_))
    ));
    assert!(matches!(
        sub.follower().follow(nope, EventId::ZERO).await,
        Err(BusError::UnknownChannel(_))
    ));
    assert_nothing_more(&bus, &mut sub, &tasks()).await;
}

/// A channel spread over partitions by entity: each entity's events in one partition, in
/// order; a subscription to the channel reads every partition; the cursor holds a position
/// per partition; one written for another layout (here: the channel as one stream) starts
/// the channel over with a RESYNC of each partition, never a silent skip.
async fn partitioned_channel(f: &Fixture) {
    let bus = f.bus().await;
    let streams = f.config.streams_of(&hot());
    assert_eq!(streams.len(), 4);
    let mut sub = bus.subscribe(&[hot()], None).await.unwrap();
    let ev = |entity: usize, n: usize| {
        NewEvent::new(
            EventType::new("tick").unwrap(),
            Payload::new(format!("e{entity}"), Action::Updated).with_data(serde_json::json!({ "n": n })),
        )
    };
    let batch: Vec<(Channel, NewEvent)> = (0..40).map(|i| (hot(), ev(i % 10, i / 10))).collect();
    bus.publish_batch(batch).await.unwrap();
    let got = take_events(&mut sub, 40).await;
    let mut partition_of: HashMap<String, Channel> = HashMap::new();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for e in &got {
        assert!(streams.contains(&e.channel), "{} is not a partition of hot", e.channel);
        let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["channel"], "hot");
        let p = partition_of.entry(e.payload.id.clone()).or_insert(e.channel.clone());
        assert_eq!(*p, e.channel, "one entity, one partition");
        let n = e.payload.data.as_ref().unwrap()["n"].as_u64().unwrap();
        let want = expected.entry(e.payload.id.clone()).or_default();
        assert_eq!(n, *want, "{}'s events in order", e.payload.id);
        *want += 1;
    }
    let used: std::collections::HashSet<&Channel> = partition_of.values().collect();
    assert!(used.len() > 1, "ten entities spread over more than one partition");
    // The head holds a position per partition; a replay reads one of them, not the channel.
    let head = bus.head(&[hot()]).await.unwrap();
    assert_eq!(head.iter().count(), 4);
    assert!(matches!(
        bus.replay(&hot(), EventId::ZERO, 10).await,
        Err(BusError::Partitioned(_))
    ));
    let in_one = bus.replay(&streams[0], EventId::ZERO, 100).await.unwrap();
    assert!(in_one.events.iter().all(|e| e.channel == streams[0]));
    // From the head: only what comes after, in every partition.
    bus.publish(&hot(), ev(3, 99)).await.unwrap();
    let mut from_head = bus.subscribe(&[hot()], Some(&head)).await.unwrap();
    assert_eq!(next_event(&mut from_head).await.payload.id, "e3");
    // A cursor of the channel as one stream (N was 1): a RESYNC per partition, at its head.
    let mut old = Cursor::new();
    old.set(hot(), EventId::new(1, 0));
    let mut resumed = bus.subscribe(&[hot()], Some(&old)).await.unwrap();
    let head = bus.head(&[hot()]).await.unwrap();
    for _ in 0..4 {
        match next(&mut resumed).await {
            Delivery::Resync { channel, resume_from } => {
                assert_eq!(head.get(&channel), Some(resume_from), "{channel} at its head");
            }
            other => panic!("expected a RESYNC, got {other:?}"),
        }
    }
    bus.publish(&hot(), ev(4, 100)).await.unwrap();
    assert_eq!(next_event(&mut resumed).await.payload.id, "e4", "then live");
    // An entity's state lives with its partition.
    let guard = Guard::new("e7", None, "1");
    assert!(matches!(
        bus.publish_guarded(&hot(), ev(7, 101), guard).await.unwrap(),
        Guarded::Done(_)
    ));
    assert_eq!(bus.state(&hot(), "e7").await.unwrap().as_deref(), Some("1"));
    // The first subscription had e3 and e4 of the later publishes first.
    let later = take_events(&mut sub, 3).await;
    let ids: Vec<&str> = later.iter().map(|e| e.payload.id.as_str()).collect();
    assert_eq!(ids, ["e3", "e4", "e7"]);
    let e7 = &later[2];
    assert_eq!(
        e7.channel, partition_of["e7"],
        "the guarded event in e7's partition too"
    );
    assert_nothing_more(&bus, &mut sub, &hot()).await;
}

/// The [`event_bus::Broker`] role: publish, subscribe, replay, what a subscription follows.
async fn broker_suite(f: &Fixture) {
    replay_pages(f).await;
    order_per_channel(f).await;
    replay_from_cursor(f).await;
    dedupe(f).await;
    batch_keeps_order_and_results(f).await;
    concurrent_publishes(f).await;
    rejects_unknown_channels_and_types(f).await;
    trace_context_travels(f).await;
    follow_and_unfollow(f).await;
    partitions(f).await;
    partitioned_channel(f).await;
}

/// The [`event_bus::Presence`] role: announced figures, their expiry, the roster.
async fn presence_suite(f: &Fixture) {
    presence(f).await;
}

/// The [`event_bus::EntityState`] role: state moved atomically with its events.
async fn state_suite(f: &Fixture) {
    guarded_publish(f).await;
}

/// Every role.
async fn run_common(f: &Fixture) {
    broker_suite(f).await;
    presence_suite(f).await;
    state_suite(f).await;
}

/// An event's `traceparent` reaches every subscriber, live and replayed, and an event without
/// one has none.
async fn trace_context_travels(f: &Fixture) {
    let bus = f.bus().await;
    let before = bus.head(&[Channel::ORDERS]).await.unwrap();
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let tp: Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    bus.publish(&Channel::ORDERS, order("traced").with_traceparent(Some(tp)))
        .await
        .unwrap();
    bus.publish(&Channel::ORDERS, order("untraced")).await.unwrap();
    let live = take_events(&mut sub, 2).await;
    let mut replay = bus.subscribe(&[Channel::ORDERS], Some(&before)).await.unwrap();
    let replayed = take_events(&mut replay, 2).await;
    for got in [&live, &replayed] {
        assert_eq!(got[0].traceparent, Some(tp), "{:?}", got[0]);
        assert_eq!(got[1].traceparent, None, "{:?}", got[1]);
        assert!(!got[1].to_json().contains("traceparent"), "absent, not null");
    }
}

/// Guarded publishes: the event is stored only when the entity's state is as expected, and the
/// state moves with it; an idempotency key wins over the state (a retried job); racing
/// publishers that each retry on conflict produce exactly one event per state, in state order.
async fn guarded_publish(f: &Fixture) {
    let bus = f.bus().await;
    let c = Channel::INVENTORY;
    let ev = |n: u64| {
        NewEvent::new(
            EventType::INVENTORY_CHANGE,
            Payload::new("sku-1", Action::Updated).with_data(serde_json::json!({ "n": n })),
        )
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let entity = format!("sku-{}", N.fetch_add(1, Ordering::Relaxed));
    assert_eq!(bus.state(&c, &entity).await.unwrap(), None);
    let before = bus
        .head(std::slice::from_ref(&c))
        .await
        .unwrap()
        .get(&c)
        .unwrap_or(EventId::ZERO);
    // A first observation as a baseline: no event.
    let base = bus.set_state(&c, Guard::new(&entity, None, "0")).await.unwrap();
    assert!(matches!(base, Guarded::Done(_)), "{base:?}");
    assert_eq!(bus.state(&c, &entity).await.unwrap().as_deref(), Some("0"));
    let stale = bus
        .publish_guarded(&c, ev(9), Guard::new(&entity, None, "9"))
        .await
        .unwrap();
    assert_eq!(
        stale,
        Guarded::Conflict {
            current: Some("0".into())
        }
    );
    let key = format!("job-{entity}");
    let job = || {
        bus.publish_guarded(
            &c,
            ev(1).with_idempotency_key(&key),
            Guard::new(&entity, Some("0".into()), "1"),
        )
    };
    let first = job().await.unwrap();
    let Guarded::Done(p) = first else { panic!("{first:?}") };
    assert!(!p.duplicate);
    // The same job again, after the state moved on: its first event, nothing new.
    let again = job().await.unwrap();
    assert_eq!(
        again,
        Guarded::Done(event_bus::Published {
            id: p.id,
            duplicate: true
        })
    );
    assert_eq!(bus.published_with(&c, &key).await.unwrap(), Some(p.id));
    assert_eq!(bus.published_with(&c, "never-used").await.unwrap(), None);

    // Eight racers, each moving the state n -> n+1 with one event, 5 steps each.
    let racers = (0..8).map(|_| {
        let (bus, entity) = (bus.clone(), entity.clone());
        tokio::spawn(async move {
            let mut done = 0;
            while done < 5 {
                let cur = bus.state(&Channel::INVENTORY, &entity).await.unwrap().unwrap();
                let n: u64 = cur.parse().unwrap();
                let g = Guard::new(&entity, Some(cur), (n + 1).to_string());
                if let Guarded::Done(_) = bus.publish_guarded(&Channel::INVENTORY, ev(n + 1), g).await.unwrap() {
                    done += 1;
                }
            }
        })
    });
    for r in racers {
        r.await.unwrap();
    }
    assert_eq!(bus.state(&c, &entity).await.unwrap().as_deref(), Some("41"));
    let mut ns = Vec::new();
    let mut after = before;
    loop {
        let page = bus.replay(&c, after, 100).await.unwrap();
        ns.extend(
            page.events
                .iter()
                .filter(|e| e.payload.id == "sku-1")
                .map(|e| e.payload.data.as_ref().unwrap()["n"].as_u64().unwrap()),
        );
        after = page.last;
        if page.at_head {
            break;
        }
    }
    assert_eq!(
        ns,
        (1..=41).collect::<Vec<u64>>(),
        "one event per state, in state order"
    );
    assert!(matches!(bus.state(&c, "").await, Err(BusError::InvalidEntity(_))));
}

/// Redis stopped with `SHUTDOWN SAVE` and started again on the same data dir mid-stream: the
/// subscriber reports Down, then resumes by itself with nothing lost and nothing twice. The
/// publisher retries failed publishes with an idempotency key, as a worker should.
async fn survives_store_restart(f: &mut Fixture) {
    const N: usize = 4_000;
    let publisher_bus = f.bus().await;
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let mut health = sub.health();
    let received = std::sync::Arc::new(AtomicU32::new(0));
    let collector = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(N);
            while ids.len() < N {
                let e = next_event(&mut sub).await;
                ids.push(e.payload.id.clone());
                received.fetch_add(1, Ordering::Relaxed);
            }
            (ids, sub)
        })
    };
    let publisher = tokio::spawn(async move {
        let mut failures = 0u32;
        for i in 0..N {
            let e = order(format!("{i}")).with_idempotency_key(format!("restart:{i}"));
            while publisher_bus.publish(&Channel::ORDERS, e.clone()).await.is_err() {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if i % 10 == 0 {
                // Pace the load so that the restart falls in the middle of it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        (failures, publisher_bus)
    });
    assert!(
        testkit::wait_until(PATIENCE, || {
            let n = received.load(Ordering::Relaxed) as usize;
            async move { n >= N / 3 }
        })
        .await
    );
    let key = f.stream_key(&Channel::ORDERS);
    let server = f.owner_of(&key);
    tokio::task::block_in_place(|| server.shutdown_save()).unwrap();
    let at_stop = received.load(Ordering::Relaxed) as usize;
    tokio::time::timeout(PATIENCE, health.wait_for(|h| !h.is_up()))
        .await
        .expect("subscription health did not turn Down while Redis was stopped")
        .unwrap();
    tokio::task::block_in_place(|| server.restart()).unwrap();
    tokio::time::timeout(PATIENCE, health.wait_for(|h| h.is_up()))
        .await
        .expect("subscription health did not return to Up")
        .unwrap();
    let (failures, publisher_bus) = publisher.await.unwrap();
    let (ids, mut sub) = collector.await.unwrap();
    assert!(at_stop < N, "the restart did not fall mid-stream");
    assert!(failures > 0, "no publish failed: Redis was never really down");
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "lost, duplicated or reordered events across the restart");
    assert!(bus.stats().snapshot().reconnects >= 1);
    assert_nothing_more(&publisher_bus, &mut sub, &Channel::ORDERS).await;
}

fn small_retention(c: &mut BusConfig) {
    c.retention = Retention {
        max_len: 50,
        max_age_secs: 0,
    };
    c.memory_capacity = 50;
}

// ---------------------------------------------------------------------------------------------
// Redis-only cases: what only a separate store can do.
// ---------------------------------------------------------------------------------------------

/// Garbage in the stream and on the pub/sub channel is counted by kind and skipped.
async fn malformed_is_counted_and_skipped(f: &Fixture) {
    let bus = f.bus().await;
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let key = f.stream_key(&Channel::ORDERS);
    let pubsub = f.config.keys().pubsub(&Channel::ORDERS);
    f.cli(&["XADD", &key, "*", "e", "{not json"]);
    f.cli(&["XADD", &key, "*", "other", "field"]);
    f.cli(&[
        "XADD",
        &key,
        "*",
        "e",
        r#"{"type":"ORDER_RECEIVED","payload":{"id":"x"},"timestamp":"2026-01-01T00:00:00Z"}"#,
    ]);
    f.cli(&[
        "XADD",
        &key,
        "*",
        "e",
        r#"{"type":"PRICE_CHANGE","payload":{"id":"x","action":"updated"},"timestamp":"2026-01-01T00:00:00Z"}"#,
    ]);
    // An entity id longer than MAX_PAYLOAD_ID, stored by someone else or published plainly
    // (Node): malformed, as the bus refuses to publish one.
    let long = format!(
        r#"{{"type":"ORDER_RECEIVED","payload":{{"id":"{}","action":"created"}},"timestamp":"2026-01-01T00:00:00Z"}}"#,
        "o".repeat(event_bus::MAX_PAYLOAD_ID + 1)
    );
    f.cli(&["XADD", &key, "*", "e", &long]);
    // Before the last garbage: the listener takes messages in order, so once that one is
    // counted this one has been too.
    f.cli(&["PUBLISH", &pubsub, &long]);
    f.cli(&["PUBLISH", &pubsub, "definitely not json"]);
    let good = bus.publish(&Channel::ORDERS, order("good")).await.unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.id, good.id,
        "the valid event after the garbage must arrive, and only it"
    );
    let stats = bus.stats();
    assert!(
        testkit::wait_until(PATIENCE, || async {
            stats.snapshot().malformed(MalformedKind::NotJson) >= 2
        })
        .await,
        "malformed pub/sub message not counted: {:?}",
        stats.snapshot()
    );
    let s = stats.snapshot();
    assert_eq!(s.malformed(MalformedKind::BadEntry), 1, "{s:?}");
    assert_eq!(s.malformed(MalformedKind::NotEnvelope), 3, "{s:?}");
    assert_eq!(s.malformed(MalformedKind::UnknownType), 1, "{s:?}");
    assert_eq!(s.malformed(MalformedKind::NotJson), 2, "{s:?}");
    assert_nothing_more(&bus, &mut sub, &Channel::ORDERS).await;

    // Replay accounts for every entry: pages of 2 walk over the garbage without stopping
    // early (a page of garbage is not the head) and name each malformed entry's kind.
    let (mut after, mut kinds, mut events) = (EventId::ZERO, Vec::new(), Vec::new());
    loop {
        let page = bus.replay(&Channel::ORDERS, after, 2).await.unwrap();
        kinds.extend(page.malformed.iter().map(|(_, k)| *k));
        events.extend(page.events.iter().map(|e| e.id));
        assert!(page.last >= after, "a page must not go backwards");
        after = page.last;
        if page.at_head {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            MalformedKind::NotJson,
            MalformedKind::BadEntry,
            MalformedKind::NotEnvelope,
            MalformedKind::UnknownType,
            MalformedKind::NotEnvelope
        ]
    );
    assert_eq!(events[0], good.id, "{events:?}");
    assert_eq!(Some(&after), events.last());
}

/// The Phase 27 Node way: a plain PUBLISH of an envelope without id and no stream entry. With
/// three subscribers (each with its own connections, as separate processes have), every one
/// receives it once, it is stored once, and it can be replayed from a cursor.
async fn node_style_publish_is_adopted_once(f: &Fixture) {
    let buses = [f.bus().await, f.bus().await, f.bus().await];
    let mut subs = Vec::new();
    for b in &buses {
        subs.push(b.subscribe(&[Channel::ORDERS], None).await.unwrap());
    }
    let before = buses[0].head(&[Channel::ORDERS]).await.unwrap();
    let pubsub = f.config.keys().pubsub(&Channel::ORDERS);
    let node_json = r#"{"type":"ORDER_RECEIVED","payload":{"id":"ord_81","action":"created","data":{"marketplace":"ebay","total":129.5}},"timestamp":"2026-11-23T03:00:00.123Z"}"#;
    assert_eq!(f.listeners(&pubsub), 3, "the three subscribers should be listening");
    f.cli(&["PUBLISH", &pubsub, node_json]);
    let mut ids = Vec::new();
    for s in &mut subs {
        let e = next_event(s).await;
        assert_eq!(e.payload.id, "ord_81");
        assert_eq!(e.event_type, EventType::ORDER_RECEIVED);
        assert_eq!(e.timestamp.to_string(), "2026-11-23T03:00:00.123Z");
        ids.push(e.id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "subscribers saw different ids: {ids:?}"
    );
    assert_eq!(
        f.cli(&["XLEN", &f.stream_key(&Channel::ORDERS)]),
        "1",
        "stored more than once"
    );

    // A Node publisher's trace goes on with the event; a malformed one is dropped, the event not.
    let traced = r#"{"type":"ORDER_RECEIVED","payload":{"id":"ord_t","action":"created"},"timestamp":"2026-11-23T03:00:00.123Z","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
    let garbled = r#"{"type":"ORDER_RECEIVED","payload":{"id":"ord_g","action":"created"},"timestamp":"2026-11-23T03:00:00.123Z","traceparent":"not-a-trace"}"#;
    f.cli(&["PUBLISH", &pubsub, traced]);
    f.cli(&["PUBLISH", &pubsub, garbled]);
    for s in &mut subs {
        let (t, g) = (next_event(s).await, next_event(s).await);
        assert_eq!(
            t.traceparent.map(|t| t.trace_id_hex()).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!((g.payload.id.as_str(), g.traceparent), ("ord_g", None));
    }

    // The same bytes again is a second event, also stored once.
    f.cli(&["PUBLISH", &pubsub, node_json]);
    for s in &mut subs {
        let e = next_event(s).await;
        assert!(e.id > ids[0]);
    }
    assert_eq!(f.cli(&["XLEN", &f.stream_key(&Channel::ORDERS)]), "4");

    // Resumable: a late subscriber from the earlier cursor replays all four.
    let mut late = buses[0].subscribe(&[Channel::ORDERS], Some(&before)).await.unwrap();
    let replayed = take_events(&mut late, 4).await;
    assert_eq!(replayed[0].id, ids[0]);
    let adopted: u64 = buses.iter().map(|b| b.stats().snapshot().adopted).sum();
    assert_eq!(adopted, 4, "exactly one process stores each plain publish");
    // One sentinel reaches all three next: nothing extra is pending on any of them.
    let sentinel = buses[0].publish(&Channel::ORDERS, order("sentinel")).await.unwrap();
    for s in subs.iter_mut().chain([&mut late]) {
        assert_eq!(next_event(s).await.id, sentinel.id);
    }
}

/// The announcement path loses messages three ways, and the stream fills every gap: entries
/// stored without an announcement before an announced one (its `prev` names the last of them),
/// a last entry whose announcement never comes (the tail check), and the pub/sub connection
/// killed again and again during a burst. Nothing is lost, nothing arrives twice, order holds.
async fn lost_announcements_are_filled_from_the_stream(f: &Fixture) {
    let bus = f.bus().await;
    let publisher = f.bus().await;
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let key = f.stream_key(&Channel::ORDERS);
    let unannounced = |id: &str| {
        let body = format!(
            r#"{{"type":"ORDER_RECEIVED","channel":"orders","payload":{{"id":"{id}","action":"created"}},"timestamp":"2026-01-01T00:00:00.000Z"}}"#
        );
        f.cli(&["XADD", &key, "*", "e", &body])
    };
    let gaps = || bus.stats().snapshot().gaps_filled;
    let before = gaps();
    for id in ["u1", "u2", "u3"] {
        unannounced(id);
    }
    let announced = publisher.publish(&Channel::ORDERS, order("a1")).await.unwrap();
    let got = take_events(&mut sub, 4).await;
    let ids: Vec<&str> = got.iter().map(|e| e.payload.id.as_str()).collect();
    assert_eq!(
        ids,
        ["u1", "u2", "u3", "a1"],
        "the gap before an announcement is filled in order"
    );
    assert_eq!(got[3].id, announced.id);
    assert!(gaps() > before, "the gap was not found by its announcement");

    // No announcement follows: the tail check finds the entry (within two of its periods).
    let id = unannounced("u4");
    let e = next_event(&mut sub).await;
    assert_eq!((e.id.to_string(), e.payload.id.as_str()), (id, "u4"));

    // The pub/sub connection killed mid-burst, three times.
    const N: usize = 3_000;
    let burst = tokio::spawn(async move {
        for i in 0..N {
            let e = order(format!("k{i}")).with_idempotency_key(format!("kill:{i}"));
            while publisher.publish(&Channel::ORDERS, e.clone()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if i % 20 == 0 {
                // Paced, so that the kills fall inside the burst.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        publisher
    });
    let mut ids = Vec::with_capacity(N);
    let mut killed = 0;
    while ids.len() < N {
        ids.push(next_event(&mut sub).await.payload.id.clone());
        if ids.len() % 700 == 0 && killed < 3 {
            let n: u32 = f.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).trim().parse().unwrap();
            assert!(n >= 1, "no pub/sub connection to kill");
            killed += 1;
        }
    }
    let publisher = burst.await.unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
    assert_eq!(ids, expected, "lost, duplicated or reordered events across the kills");
    assert!(
        bus.stats().snapshot().reconnects >= 1,
        "the pub/sub connection never came back"
    );
    assert_nothing_more(&publisher, &mut sub, &Channel::ORDERS).await;
}

#[tokio::test]
async fn memory_broker() {
    broker_suite(&Fixture::memory(|_| {})).await;
    resync_when_too_old(&Fixture::memory(small_retention)).await;
}

#[tokio::test]
async fn memory_presence() {
    presence_suite(&Fixture::memory(|_| {})).await;
}

#[tokio::test]
async fn memory_state() {
    state_suite(&Fixture::memory(|_| {})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_seam() {
    seam(&Fixture::memory(|_| {})).await;
}

#[tokio::test]
async fn redis_broker() {
    let f = Fixture::redis(|_| {});
    broker_suite(&f).await;
    abandoned_publishes_do_not_stall_the_channel(&f).await;
}

#[tokio::test]
async fn redis_presence() {
    presence_suite(&Fixture::redis(|_| {})).await;
}

#[tokio::test]
async fn redis_state() {
    state_suite(&Fixture::redis(|_| {})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_seam() {
    seam(&Fixture::redis(|_| {})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart() {
    survives_store_restart(&mut Fixture::redis(|_| {})).await;
}

#[tokio::test]
async fn redis_resync() {
    resync_when_too_old(&Fixture::redis(small_retention)).await;
}

#[tokio::test]
async fn redis_malformed() {
    malformed_is_counted_and_skipped(&Fixture::redis(|_| {})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_announcements() {
    lost_announcements_are_filled_from_the_stream(&Fixture::redis(|_| {})).await;
}

#[tokio::test]
async fn redis_node_interop() {
    node_style_publish_is_adopted_once(&Fixture::redis(|_| {})).await;
}

/// The Redis half of the suite against a three-master cluster started by the test: every
/// role (`run_common`: the broker, presence and state suites), then the Redis cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_conformance() {
    let cluster = RedisCluster::start().expect("start a 3-master cluster");
    let f = Fixture::on_cluster(cluster, |_| {});
    run_common(&f).await;
    let f = Fixture::on_cluster(f.into_cluster(), small_retention);
    resync_when_too_old(&f).await;
    let f = Fixture::on_cluster(f.into_cluster(), |_| {});
    malformed_is_counted_and_skipped(&f).await;
    let f = Fixture::on_cluster(f.into_cluster(), |_| {});
    node_style_publish_is_adopted_once(&f).await;
    let f = Fixture::on_cluster(f.into_cluster(), |_| {});
    seam(&f).await;
    let mut f = Fixture::on_cluster(f.into_cluster(), |_| {});
    survives_store_restart(&mut f).await;
    // The channels of the suite really live on different masters.
    let slots: Vec<String> = [Channel::ORDERS, tasks()]
        .iter()
        .map(|c| f.cli(&["CLUSTER", "KEYSLOT", &f.stream_key(c)]))
        .collect();
    assert_ne!(slots[0], slots[1]);
}
