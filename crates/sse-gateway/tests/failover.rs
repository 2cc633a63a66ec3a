//! Redis Sentinel failover under live streams: a primary, its replica and a sentinel
//! (`testkit::sentinel`), a real gateway process given the sentinel's URL, clients that resume
//! by themselves. The primary is killed mid-stream and the replica promoted.
//!
//! - Without `wait_replicas`, events the primary acknowledged but never replicated are gone
//!   from the new primary: the clients that had them get a RESYNC, and a client resuming from
//!   one of them gets a RESYNC too; nothing is skipped in silence.
//! - With `wait_replicas = 1`, an acknowledged event is on the replica: every one reaches the
//!   client across the failover.
//!
//! - On a Redis Cluster with a replica per master, the master of the stream's slot is killed
//!   under load: with `wait_replicas = 1` nothing acknowledged is lost there either.
//!
//! Readiness goes false while no primary answers and true after, every time.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus};
use testkit::{
    cluster::RedisCluster,
    process::Service,
    sentinel::{signal, Failover},
    sse::SseStream,
};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(30);

fn gateway(url: &str) -> Service {
    let env: HashMap<String, String> = [
        ("REDIS_URL", url.to_owned()),
        ("INSTANCE_ID", "gw-failover".into()),
        ("AUTH_MODE", "none".into()),
        ("SSE_DEBOUNCE_WINDOW", "0".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Service::start(Path::new(env!("CARGO_BIN_EXE_sse-gateway")), &env).expect("start sse-gateway")
}

async fn bus(url: &str, wait_replicas: u32) -> RedisBus {
    RedisBus::connect(BusConfig {
        redis_url: Some(url.to_owned()),
        wait_replicas,
        command_timeout_ms: 3_000,
        ..Default::default()
    })
    .await
    .expect("connect through the sentinel")
}

fn event(seq: usize) -> NewEvent {
    NewEvent::new(
        EventType::ORDER_RECEIVED,
        Payload::new(seq.to_string(), Action::Created),
    )
    .with_idempotency_key(format!("failover-{seq}"))
}

/// Publishes `seq` until it is acknowledged (a worker retrying with its idempotency key);
/// returns how many attempts were refused.
async fn publish(b: &RedisBus, seq: usize) -> usize {
    let start = tokio::time::Instant::now();
    let mut refused = 0;
    while let Err(e) = b.publish(&Channel::ORDERS, event(seq)).await {
        refused += 1;
        assert!(
            start.elapsed() < T,
            "event {seq} never acknowledged in {T:?} ({refused} tries); the last refusal: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if refused > 0 {
        eprintln!(
            "event {seq} acknowledged after {:?} and {refused} refusals",
            start.elapsed()
        );
    }
    refused
}

/// A worker publishing 100 events/s from 1 on, each retried until acknowledged: its stop, the
/// acknowledged sequence numbers (0 was published by the setup), and how many tries were refused.
fn worker(
    b: RedisBus,
) -> (
    watch::Sender<bool>,
    Arc<Mutex<Vec<usize>>>,
    tokio::task::JoinHandle<usize>,
) {
    let (stop_tx, stop) = watch::channel(false);
    let acked = Arc::new(Mutex::new(vec![0usize]));
    let out = acked.clone();
    let task = tokio::spawn(async move {
        let mut refused = 0;
        let mut seq = 1;
        while !*stop.borrow() {
            refused += publish(&b, seq).await;
            acked.lock().unwrap().push(seq);
            seq += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        refused
    });
    (stop_tx, out, task)
}

type Worker = (
    watch::Sender<bool>,
    Arc<Mutex<Vec<usize>>>,
    tokio::task::JoinHandle<usize>,
);

/// After a promotion: the new primary has no replica until the old one is back as its
/// replica (`restart`, then `replicated` holds), and until then nothing is acknowledged. Then
/// the worker goes on, stops, and every event it had acknowledged must reach the client.
async fn rejoin_and_check<S>(
    mut s: Setup<S>,
    w: Worker,
    restart: impl FnOnce(&mut S),
    replicated: impl Fn(&S) -> bool,
) {
    let (stop, acked, publisher) = w;
    let before = acked.lock().unwrap().len();
    restart(&mut s.store);
    testkit::until("the old primary back as a replica", T, || replicated(&s.store)).await;
    testkit::until("100 more events acknowledged", T, || {
        acked.lock().unwrap().len() > before + 100
    })
    .await;
    let _ = stop.send(true);
    let refused = publisher.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let seen = s.seen.clone();
    testkit::until("every acknowledged event delivered", T, || {
        let seen = seen.lock().unwrap();
        acked.iter().all(|s| seen.has(*s))
    })
    .await;
    assert!(
        refused > 0,
        "publishes during the failover must have been refused, not acknowledged"
    );
    s.finish().await;
}

/// What a self-resuming client saw: payload ids and `RESYNC` markers in arrival order, and
/// the cursor after each id.
#[derive(Default)]
struct Seen {
    /// A stream has been open (its head read: the gateway follows the hub for it from then).
    opened: bool,
    items: Vec<String>,
    cursors: HashMap<String, String>,
}

impl Seen {
    fn has(&self, seq: usize) -> bool {
        self.cursors.contains_key(&seq.to_string())
    }
}

/// Follows `orders` on `base` until `stop`, reconnecting with Last-Event-ID (as EventSource).
fn follow(base: String, stop: watch::Receiver<bool>) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let url = format!("{base}/api/realtime/events?channels=orders");
        let mut last: Option<String> = None;
        while !*stop.borrow() {
            let Ok(mut s) = SseStream::connect(&url, last.as_deref()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if s.status != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            seen.lock().unwrap().opened = true;
            loop {
                let m =
                    match tokio::time::timeout(Duration::from_millis(200), s.next_message(Duration::from_secs(3600)))
                        .await
                    {
                        Ok(Some(m)) => m,
                        Ok(None) => break, // the stream ended: a new one from the last cursor
                        Err(_) if *stop.borrow() => break,
                        Err(_) => continue,
                    };
                let v: serde_json::Value = serde_json::from_str(&m.data).expect("JSON data");
                let mut seen = seen.lock().unwrap();
                if v["type"] == "RESYNC" {
                    seen.items.push("RESYNC".into());
                } else {
                    let id = v["payload"]["id"].as_str().expect("payload id").to_owned();
                    seen.items.push(id.clone());
                    if let Some(c) = &m.id {
                        seen.cursors.insert(id, c.clone());
                    }
                }
                if m.id.is_some() {
                    last = m.id;
                }
            }
        }
    });
    (out, task)
}

/// Polls `/readyz` every 50 ms, keeping each change of answer.
fn watch_ready(port: u16, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<Vec<Option<u16>>> {
    tokio::task::spawn_blocking(move || {
        let mut changes = Vec::new();
        // Until told, or until the test is gone (a failed assertion drops the sender).
        while !*stop.borrow() && stop.has_changed().is_ok() {
            let s = testkit::http_status(port, "/readyz");
            if changes.last() != Some(&s) {
                changes.push(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        changes
    })
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

/// A store that fails over (`Failover`, `RedisCluster`), a gateway on it, a client following
/// it, readiness watched, and a bus publishing to it; ready once the client has an event.
struct Setup<S> {
    store: S,
    gw: Service,
    b: RedisBus,
    seen: Arc<Mutex<Seen>>,
    client: tokio::task::JoinHandle<()>,
    ready: tokio::task::JoinHandle<Vec<Option<u16>>>,
    stop: watch::Sender<bool>,
}

async fn setup<S>(store: S, url: &str, wait_replicas: u32) -> Setup<S> {
    let gw = gateway(url);
    let (stop, stop_rx) = watch::channel(false);
    let ready = watch_ready(port_of(&gw.base()), stop_rx.clone());
    let (seen, client) = follow(gw.base(), stop_rx);
    let b = bus(url, wait_replicas).await;
    testkit::until("the client's stream is open", T, || seen.lock().unwrap().opened).await;
    publish(&b, 0).await;
    testkit::until("the first event delivered", T, || seen.lock().unwrap().has(0)).await;
    Setup {
        store,
        gw,
        b,
        seen,
        client,
        ready,
        stop,
    }
}

impl<S> Setup<S> {
    /// Stops the client and the readiness watch; asserts readiness went false and came back.
    async fn finish(self) {
        let port = port_of(&self.gw.base());
        let back = testkit::wait_until(T, || async { testkit::http_status(port, "/readyz") == Some(200) }).await;
        let _ = self.stop.send(true);
        self.client.await.unwrap();
        let ready = self.ready.await.unwrap();
        assert!(
            back && ready.contains(&Some(503)),
            "readiness must go false while no primary answers and true after: {ready:?}\n{}",
            self.gw.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tail_is_answered_with_resync_never_skipped() {
    let f = Failover::start().unwrap();
    let url = f.url();
    let mut s = setup(f, &url, 0).await;
    let seen = s.seen.clone();
    for seq in 1..50 {
        publish(&s.b, seq).await;
    }
    testkit::until("events 0..50 delivered", T, || seen.lock().unwrap().has(49)).await;

    // The replica stops, and the primary drops its link (a stopped process would still find
    // what was sent in its socket buffer): what follows exists on the primary only.
    let replica_pid = s.store.replica.pid().unwrap();
    signal(replica_pid, "-STOP");
    s.store.primary.cli(&["CLIENT", "KILL", "TYPE", "replica"]).unwrap();
    for seq in 50..80 {
        publish(&s.b, seq).await;
    }
    testkit::until("events 50..80 delivered live from the primary", T, || {
        seen.lock().unwrap().has(79)
    })
    .await;
    let lost_cursor = seen.lock().unwrap().cursors["65"].clone();
    s.store.primary.crash();
    signal(replica_pid, "-CONT");
    s.store.wait_promoted(T).unwrap();
    for seq in 80..100 {
        publish(&s.b, seq).await;
    }
    let delivered = testkit::wait_until(T, || {
        let v = seen.lock().unwrap().has(99);
        async move { v }
    })
    .await;
    assert!(
        delivered,
        "events after the failover not delivered; the client saw {:?}; the gateway said:\n{}",
        &seen.lock().unwrap().items[45..],
        s.gw.log_text()
    );

    // Events 50..80 are gone from the new primary. The live client had them, and is told
    // its data no longer matches the store, before anything newer; nothing is missing.
    {
        let seen = seen.lock().unwrap();
        let resync = seen
            .items
            .iter()
            .position(|i| i == "RESYNC")
            .unwrap_or_else(|| panic!("no RESYNC after the lost tail: {:?}", &seen.items[45..]));
        let at = |seq: usize| seen.items.iter().position(|i| *i == seq.to_string()).unwrap();
        assert!(at(79) < resync && resync < at(80), "{:?}", &seen.items[45..]);
        for seq in 0..100 {
            assert!(seen.has(seq), "event {seq} missing");
        }
    }
    // A client resuming from inside the lost tail gets a RESYNC first, not events 80.. as if
    // 66..80 had never been; then what the new primary has after the lost tail, 80..100.
    let url = format!("{}/api/realtime/events?channels=orders", s.gw.base());
    let mut stream = SseStream::connect(&url, Some(&lost_cursor)).await.unwrap();
    let first = stream.next_message(T).await.expect("a first message");
    assert!(
        first.data.contains("\"RESYNC\""),
        "resumed from a lost event: {}",
        first.data
    );
    for seq in 80..100 {
        let m = stream.next_message(T).await.expect("the events after the RESYNC");
        let env: serde_json::Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(env["payload"]["id"], seq.to_string(), "after the RESYNC: {}", m.data);
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_every_acknowledged_event_survives_the_failover() {
    let f = Failover::start().unwrap();
    let url = f.url();
    let mut s = setup(f, &url, 1).await;
    let (pub_stop_tx, acked, publisher) = worker(s.b.clone());
    testkit::until("100 events acknowledged", T, || acked.lock().unwrap().len() > 100).await;
    s.store.primary.crash();
    s.store.wait_promoted(T).unwrap();
    rejoin_and_check(
        s,
        (pub_stop_tx, acked, publisher),
        // The old primary comes back as the new one's replica, as its operator starts it.
        // (Left to itself, Sentinel re-points it only after 8 s of seeing it as a primary,
        // on INFO polled every 10 s, and not at all while a starved Sentinel is in TILT
        // mode: on a loaded machine that took over a minute.)
        |f| {
            let new_primary = f.replica.port();
            f.primary.restart_as_replica_of(new_primary).unwrap()
        },
        |f| {
            f.replica
                .cli(&["INFO", "replication"])
                .is_ok_and(|i| i.contains("connected_slaves:1"))
        },
    )
    .await;
}

/// d. The primary cut off alive for 10 s (a partition, not a crash) from its replica, the
/// sentinel and every client (they reach it through the sentinel's address), then healed.
/// The sentinel promotes the replica; clients and the worker find it through the sentinel.
/// With `wait_replicas`, every acknowledged event reaches the client; the old primary, back,
/// is made the new one's replica (as its operator does: Sentinel may take over a minute on a
/// loaded machine) and what it took during the cut, acknowledged to no one, goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_for_10_s_fails_over_and_loses_nothing_acknowledged() {
    let f = Failover::start_partitionable().unwrap();
    let url = f.url();
    let s = setup(f, &url, 1).await;
    let (pub_stop_tx, acked, publisher) = worker(s.b.clone());
    testkit::until("100 events acknowledged", T, || acked.lock().unwrap().len() > 100).await;
    let cut_at = tokio::time::Instant::now();
    s.store.link.as_ref().unwrap().down(true);
    s.store.wait_promoted(T).unwrap();
    tokio::time::sleep_until(cut_at + Duration::from_secs(10)).await;
    let seen = s.seen.clone();
    rejoin_and_check(
        s,
        (pub_stop_tx, acked, publisher),
        |f| {
            f.link.as_ref().unwrap().down(false);
            let new_primary = f.replica.port().to_string();
            f.primary.cli(&["REPLICAOF", "127.0.0.1", &new_primary]).unwrap();
        },
        |f| {
            f.replica
                .cli(&["INFO", "replication"])
                .is_ok_and(|i| i.contains("connected_slaves:1"))
        },
    )
    .await;
    // An event the primary stored and announced in the moment of the cut reaches the client
    // live before its replication is confirmed. Not acknowledged, it is published again by
    // the worker on the new primary, where the first copy never arrived: the client is told
    // (RESYNC) before it gets the event again. No event comes twice otherwise.
    let seen = seen.lock().unwrap();
    let items = &seen.items;
    for (i, id) in items.iter().enumerate().filter(|(_, id)| *id != "RESYNC") {
        if let Some(j) = items[i + 1..].iter().position(|x| x == id) {
            assert!(
                items[i + 1..i + 1 + j].iter().any(|x| x == "RESYNC"),
                "event {id} reached the client twice without a RESYNC between: {items:?}"
            );
        }
    }
    assert!(items.iter().filter(|x| *x == "RESYNC").count() <= 1, "{items:?}");
}

/// The same on a Redis Cluster of three masters with a replica each: the master of the
/// `orders` stream's slot is killed under load and its replica promoted; with `wait_replicas`
/// every acknowledged event reaches the client (`WAIT` goes to the slot's node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_killed_master_loses_no_acknowledged_event() {
    let cluster = RedisCluster::start_with_replicas().unwrap();
    let url = cluster.url();
    let mut s = setup(cluster, &url, 1).await;
    let (pub_stop_tx, acked, publisher) = worker(s.b.clone());
    testkit::until("100 events acknowledged", T, || acked.lock().unwrap().len() > 100).await;
    let slot = fred::util::redis_keyslot(b"rakuda:realtime:stream:{orders}");
    let (master, replica) = s.store.owners(0, slot).unwrap();
    let replica = replica.expect("the slot's master has a replica");
    s.store.nodes_mut()[master].crash();
    testkit::until("the replica promoted", T, || {
        s.store.nodes()[replica]
            .cli(&["ROLE"])
            .is_ok_and(|r| r.starts_with("master"))
    })
    .await;
    // The killed master comes back as the new master's replica.
    rejoin_and_check(
        s,
        (pub_stop_tx, acked, publisher),
        |c| c.nodes_mut()[master].restart().unwrap(),
        |c| {
            c.nodes()[replica]
                .cli(&["INFO", "replication"])
                .is_ok_and(|i| i.contains("connected_slaves:1"))
        },
    )
    .await;
}
