//! The live path on sharded pub/sub: each event is announced with `SPUBLISH` on its channel's
//! shard channel (`rakuda:realtime:live:{<channel>}`, in the stream's slot), and heard with
//! `SSUBSCRIBE` on the master that owns it. On a single Redis 7 the same commands work; on a
//! Cluster only the slot's master announces an event, and a slot moved under load (a reshard)
//! takes its subscribers to the new master with nothing lost, repeated or reordered.
//! Every Redis is started by the test on loopback.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use event_bus::{
    connect, Action, AnyBus, Broker, BusConfig, Channel, Delivery, EventType, NewEvent, Payload, Subscription,
};
use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    prelude::Config,
};
use testkit::{cluster::RedisCluster, RedisServer};

const PATIENCE: Duration = Duration::from_secs(20);

static NEXT: AtomicU32 = AtomicU32::new(0);

fn config(url: String, tweak: impl FnOnce(&mut BusConfig)) -> BusConfig {
    let mut c = BusConfig {
        prefix: format!("s{}:rakuda:realtime:", NEXT.fetch_add(1, Ordering::Relaxed)),
        redis_url: Some(url),
        ..Default::default()
    };
    tweak(&mut c);
    c
}

fn order(id: impl Into<String>) -> NewEvent {
    NewEvent::new(EventType::ORDER_RECEIVED, Payload::new(id, Action::Created))
}

async fn next_id(sub: &mut Subscription) -> String {
    match tokio::time::timeout(PATIENCE, sub.next()).await {
        Ok(Some(Delivery::Event(e))) => e.payload.id.clone(),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// `calls` of one command in a server's `INFO commandstats` (0 when never called).
fn calls(s: &RedisServer, command: &str) -> u64 {
    let info = s.cli(&["INFO", "commandstats"]).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// The second line of `PUBSUB SHARDNUMSUB <name>` / `PUBSUB NUMSUB <name>` on one server.
fn numsub(s: &RedisServer, sub: &str, name: &str) -> u64 {
    let out = s.cli(&["PUBSUB", sub, name]).expect("PUBSUB");
    out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// A single Redis: announcements are `SPUBLISH`es, one per stored event, and no classic
/// `PUBLISH`; the subscription listens on the shard channel, and on the Phase 27 channel only
/// to adopt Node code's plain publishes. With `announce_plain`, Node subscribers of the Phase 27
/// channel hear each event too, and a bus subscriber still gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_redis_announces_on_shard_channels() {
    let server = RedisServer::start().expect("redis-server");
    let c = config(server.url(), |_| {});
    let (live, plain) = (c.keys().live(&Channel::ORDERS), c.keys().pubsub(&Channel::ORDERS));
    let bus = connect(c.clone()).await.unwrap();
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    assert_eq!(
        numsub(&server, "SHARDNUMSUB", &live),
        1,
        "the subscription's shard channel"
    );
    assert_eq!(
        numsub(&server, "NUMSUB", &plain),
        1,
        "adoption listens on the Phase 27 channel"
    );
    for i in 0..10 {
        bus.publish(&Channel::ORDERS, order(format!("o{i}"))).await.unwrap();
    }
    let batch: Vec<_> = (10..15).map(|i| (Channel::ORDERS, order(format!("o{i}")))).collect();
    bus.publish_batch(batch).await.unwrap();
    for i in 0..15 {
        assert_eq!(next_id(&mut sub).await, format!("o{i}"));
    }
    assert_eq!(calls(&server, "spublish"), 15, "one SPUBLISH per stored event");
    assert_eq!(calls(&server, "publish"), 0, "no classic PUBLISH on the live path");

    // The compatibility path: a Node subscriber of the Phase 27 channel.
    let node = SubscriberClient::new(Config::from_url(&server.url()).unwrap(), None, None, None);
    node.init().await.unwrap();
    let mut heard = node.message_rx();
    node.subscribe(plain.clone()).await.unwrap();
    let compat = connect(config(server.url(), |k| {
        k.prefix = c.prefix.clone();
        k.announce_plain = true;
    }))
    .await
    .unwrap();
    let sent = compat.publish(&Channel::ORDERS, order("compat")).await.unwrap();
    let m = tokio::time::timeout(PATIENCE, heard.recv()).await.unwrap().unwrap();
    let text = m.value.as_string().unwrap();
    assert!(
        text.starts_with(&format!("{{\"id\":\"{}\"", sent.id)),
        "the Phase 27 channel heard: {text}"
    );
    assert_eq!(next_id(&mut sub).await, "compat");
    bus.publish(&Channel::ORDERS, order("after")).await.unwrap();
    assert_eq!(next_id(&mut sub).await, "after", "the classic copy was delivered again");
    assert_eq!(
        calls(&server, "publish"),
        1,
        "only the compatibility bus publishes classic"
    );
    node.quit().await.unwrap();
}

/// On a Cluster, only the master of the stream's slot announces an event, and only there does
/// a gateway subscribe to it: no node broadcasts to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_only_the_slots_master_announces() {
    let cluster = RedisCluster::start().expect("a 3-master cluster");
    let c = config(cluster.url(), |_| {});
    let live = c.keys().live(&Channel::ORDERS);
    let slot = fred::util::redis_keyslot(live.as_bytes());
    assert_eq!(
        slot,
        fred::util::redis_keyslot(c.keys().stream(&Channel::ORDERS).as_bytes())
    );
    for n in cluster.nodes() {
        n.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    }
    let bus = connect(c.clone()).await.unwrap();
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    for i in 0..20 {
        bus.publish(&Channel::ORDERS, order(format!("o{i}"))).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(next_id(&mut sub).await, format!("o{i}"));
    }
    let (owner, _) = cluster.owners(0, slot).unwrap();
    for (i, n) in cluster.nodes().iter().enumerate() {
        let (spublish, shard_subs) = (calls(n, "spublish"), numsub(n, "SHARDNUMSUB", &live));
        if i == owner {
            assert_eq!((spublish, shard_subs), (20, 1), "the slot's master");
        } else {
            assert_eq!((spublish, shard_subs), (0, 0), "node {i} is not the slot's master");
        }
        assert_eq!(calls(n, "publish"), 0, "no classic PUBLISH on node {i}");
    }
}

/// A reshard under load: the slot of `orders` moves to another master while a publisher runs
/// (its calls refused mid-move are retried with their idempotency keys). The subscription gets
/// every event once and in order, and follows the slot: it is subscribed again on the new
/// master, where the live path goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_under_load_loses_nothing_and_takes_its_subscribers_along() {
    const N: usize = 2_000;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
        .try_init();
    let cluster = Arc::new(RedisCluster::start().expect("a 3-master cluster"));
    let c = config(cluster.url(), |_| {});
    let live = c.keys().live(&Channel::ORDERS);
    let slot = fred::util::redis_keyslot(live.as_bytes());
    let bus = connect(c.clone()).await.unwrap();
    let publisher: AnyBus = connect(c.clone()).await.unwrap();
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let progress = Arc::new((AtomicU32::new(0), std::sync::Mutex::new(String::new())));
    let p = progress.clone();
    let burst = tokio::spawn(async move {
        let mut refused = 0;
        for i in 0..N {
            p.0.store(i as u32, Ordering::Relaxed);
            let e = order(format!("k{i}")).with_idempotency_key(format!("reshard:{i}"));
            while let Err(err) = publisher.publish(&Channel::ORDERS, e.clone()).await {
                *p.1.lock().unwrap() = err.to_string();
                refused += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        (publisher, refused)
    });
    let (from, _) = cluster.owners(0, slot).unwrap();
    let to = (from + 1) % 3;
    let mut ids = Vec::with_capacity(N);
    let mut moving: Option<tokio::task::JoinHandle<testkit::Result<()>>> = None;
    while ids.len() < N {
        let got = tokio::time::timeout(PATIENCE, sub.next()).await;
        let Ok(Some(Delivery::Event(e))) = got else {
            let moved = match moving.take() {
                Some(m) if m.is_finished() => format!("{:?}", m.await.unwrap()),
                Some(_) => "still moving".to_owned(),
                None => "not started".to_owned(),
            };
            panic!(
                "after {} events ({:?}): {got:?}; {:?}; the move: {moved}; publishing {} (last refusal {})",
                ids.len(),
                ids.last(),
                bus.stats().snapshot(),
                progress.0.load(Ordering::Relaxed),
                progress.1.lock().unwrap()
            );
        };
        ids.push(e.payload.id.clone());
        if ids.len() == N / 4 {
            let cluster = cluster.clone();
            moving = Some(tokio::task::spawn_blocking(move || cluster.move_slot(slot, to)));
        }
    }
    moving
        .expect("moved mid-stream")
        .await
        .unwrap()
        .expect("the slot moved");
    let (publisher, refused) = burst.await.unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
    assert_eq!(ids, expected, "lost, repeated or reordered across the move");
    assert_eq!(cluster.owners(0, slot).unwrap().0, to);

    // The subscription is on the new master now, and the live path goes on there.
    let new_owner = &cluster.nodes()[to];
    testkit::until("subscribed again on the slot's new master", PATIENCE, || {
        numsub(new_owner, "SHARDNUMSUB", &live) == 1
    })
    .await;
    assert_eq!(numsub(&cluster.nodes()[from], "SHARDNUMSUB", &live), 0);
    assert!(bus.stats().snapshot().resubscribes >= 1, "never subscribed again");
    publisher.publish(&Channel::ORDERS, order("after")).await.unwrap();
    assert_eq!(next_id(&mut sub).await, "after");
    eprintln!("publishes refused during the move: {refused}");
}
