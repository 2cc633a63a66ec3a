//! Several real gateway processes over one real redis-server: every instance delivers every
//! event whatever path it took into Redis, and clients move between instances (kill -9,
//! SIGTERM) with every event exactly once, in order.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use event_bus::{Action, Broker, Channel, Envelope, EventType, NewEvent, Payload, RedisBus};
use testkit::{process::Service, sse::SseStream, RedisServer};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(20);

/// `n` gateway processes on `redis`, grouping bursts within `window_ms` (the documented default, 500).
fn gateways(redis: &RedisServer, n: usize, window_ms: u64) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let env: HashMap<String, String> = [
                ("REDIS_URL", redis.url()),
                ("INSTANCE_ID", format!("gw{i}")),
                ("AUTH_MODE", "none".into()),
                ("RAKUDA__DRAIN_RETRY_SPREAD_MS", "500".into()),
                ("SSE_DEBOUNCE_WINDOW", window_ms.to_string()),
                ("RAKUDA__FIGURES_INTERVAL_MS", "200".into()),
                ("RUST_LOG", "warn".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            Service::start(Path::new(env!("CARGO_BIN_EXE_sse-gateway")), &env).expect("start sse-gateway")
        })
        .collect()
}

async fn bus(redis: &RedisServer) -> RedisBus {
    testkit::bus::redis_bus(redis).await
}

/// EventSource behind a load balancer over `bases` (see `testkit::sse::follow`).
async fn follow(bases: Arc<Vec<String>>, at: usize, want: usize, ready: watch::Sender<bool>) -> (Vec<String>, usize) {
    testkit::sse::follow(&bases, at, "/api/realtime/events?channels=orders", want, Some(ready)).await
}

/// Publishes events `0..n` on orders, one every `period`, reporting how many are out.
fn paced_publisher(b: RedisBus, n: usize, period: Duration) -> (tokio::task::JoinHandle<()>, watch::Receiver<usize>) {
    let (progress_tx, progress) = watch::channel(0usize);
    let task = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for i in 0..n {
            tokio::time::sleep_until(start + period * i as u32).await;
            let e = NewEvent::new(EventType::ORDER_RECEIVED, Payload::new(i.to_string(), Action::Created));
            b.publish(&Channel::ORDERS, e).await.unwrap();
            progress_tx.send_replace(i + 1);
        }
    });
    (task, progress)
}

fn seqs(ids: &[String]) -> Vec<usize> {
    ids.iter().map(|id| id.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_delivers_events_from_every_path() {
    let redis = RedisServer::start().unwrap();
    let gws = gateways(&redis, 3, 0); // one message per event: ids are compared
    let mut streams = Vec::new();
    for g in &gws {
        let mut s = SseStream::connect(&format!("{}/api/realtime/events?channels=orders", g.base()), None)
            .await
            .unwrap();
        assert_eq!(s.status, 200);
        s.next_item(T).await; // retry:
        s.next_item(T).await; // connected
        streams.push(s);
    }
    // 1. A Rust worker linking event-bus.
    let b = bus(&redis).await;
    b.publish(
        &Channel::ORDERS,
        NewEvent::new(EventType::ORDER_RECEIVED, Payload::new("via-bus", Action::Created)),
    )
    .await
    .unwrap();
    // 2. A producer over HTTP, through one instance.
    let r = reqwest::Client::new()
        .post(format!("{}/api/realtime/publish", gws[1].base()))
        .body(r#"{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"via-http","action":"created"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 3. The Phase 27 Node way: a plain PUBLISH, no stream entry, no id.
    redis
        .cli(&[
            "PUBLISH",
            "rakuda:realtime:orders",
            r#"{"type":"ORDER_RECEIVED","payload":{"id":"via-node","action":"created"},"timestamp":"2026-11-23T03:00:00.000Z"}"#,
        ])
        .unwrap();
    let mut seen = Vec::new();
    for s in &mut streams {
        let mut got = Vec::new();
        for _ in 0..3 {
            let m = s.next_message(T).await.expect("an event");
            let e: Envelope = serde_json::from_str(&m.data).unwrap();
            got.push((e.payload.id, e.id));
        }
        seen.push(got);
    }
    let mut names: Vec<&str> = seen[0].iter().map(|(p, _)| p.as_str()).collect();
    names.sort();
    assert_eq!(names, ["via-bus", "via-http", "via-node"]);
    assert!(
        seen.iter().all(|s| *s == seen[0]),
        "instances disagree on order or ids: {seen:?}"
    );
    assert_eq!(
        redis.cli(&["XLEN", "rakuda:realtime:stream:{orders}"]).unwrap(),
        "3",
        "the plain PUBLISH was stored more than once"
    );
}

/// kill -9 one of three gateways while 1k events/s flow: its clients reconnect to the others
/// with Last-Event-ID and each client ends with every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_gateway_loses_nothing() {
    const N: usize = 3_000;
    let redis = RedisServer::start().unwrap();
    let mut gws = gateways(&redis, 3, 500);
    let bases = Arc::new(gws.iter().map(Service::base).collect::<Vec<_>>());
    let mut clients = Vec::new();
    // Four clients on the instance that dies, two on another.
    for at in [0, 0, 0, 0, 1, 1] {
        let (tx, mut rx) = watch::channel(false);
        clients.push(tokio::spawn(follow(bases.clone(), at, N, tx)));
        tokio::time::timeout(T, rx.wait_for(|r| *r)).await.unwrap().unwrap();
    }
    let (publisher, mut progress) = paced_publisher(bus(&redis).await, N, Duration::from_millis(1)); // 1k/s
    tokio::time::timeout(T, progress.wait_for(|n| *n >= N / 3))
        .await
        .unwrap()
        .unwrap();
    gws[0].kill9();
    publisher.await.unwrap();
    let expected: Vec<usize> = (0..N).collect();
    let mut moved = 0;
    for (i, c) in clients.into_iter().enumerate() {
        let (events, reconnects) = c.await.unwrap();
        assert_eq!(seqs(&events), expected, "client {i} lost, repeated or reordered events");
        if i < 4 {
            assert!(
                reconnects >= 1,
                "client {i} was on the killed instance but never reconnected"
            );
            moved += 1;
        }
    }
    assert_eq!(moved, 4);
}

/// SIGTERM: the draining gateway ends its streams with a last message and exits 0; its client
/// reconnects to another instance and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_without_loss() {
    const N: usize = 2_000;
    let redis = RedisServer::start().unwrap();
    let mut gws = gateways(&redis, 2, 500);
    let bases = Arc::new(gws.iter().map(Service::base).collect::<Vec<_>>());
    let (tx, mut rx) = watch::channel(false);
    let client = tokio::spawn(follow(bases.clone(), 0, N, tx));
    tokio::time::timeout(T, rx.wait_for(|r| *r)).await.unwrap().unwrap();
    let (publisher, mut progress) = paced_publisher(bus(&redis).await, N, Duration::from_micros(500)); // 2k/s
    tokio::time::timeout(T, progress.wait_for(|n| *n >= N / 3))
        .await
        .unwrap()
        .unwrap();
    gws[0].sigterm();
    let status = tokio::task::block_in_place(|| gws[0].wait(T)).unwrap();
    assert!(
        status.success(),
        "the draining gateway exited with {status}:\n{}",
        gws[0].log_text()
    );
    publisher.await.unwrap();
    let (events, reconnects) = client.await.unwrap();
    assert_eq!(seqs(&events), (0..N).collect::<Vec<_>>());
    assert_eq!(reconnects, 1, "exactly one reconnect, to the other instance");
}

async fn stats(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/api/realtime/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every instance's figures reach Redis on a heartbeat; any instance shows the cluster total;
/// a gateway that drains withdraws at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_every_instance_and_the_total() {
    let redis = RedisServer::start().unwrap();
    let gws = gateways(&redis, 3, 0);
    let mut open = Vec::new();
    for g in [&gws[0], &gws[0], &gws[1]] {
        let mut s = SseStream::connect(&format!("{}/api/realtime/events", g.base()), None)
            .await
            .unwrap();
        s.next_item(T).await;
        open.push(s);
    }
    let base2 = gws[2].base();
    // The figures arrive on the instances' heartbeats (200 ms): poll, bounded.
    let ok = testkit::wait_until(T, || {
        let base2 = base2.clone();
        async move {
            let s = stats(&base2).await;
            s["total"]["connections"] == 3 && s["total"]["instances"] == 3
        }
    })
    .await;
    assert!(
        ok,
        "cluster total never reached 3 connections on 3 instances: {}",
        stats(&base2).await
    );
    let s = stats(&base2).await;
    let names: Vec<&str> = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gw0", "gw1", "gw2"]);
    assert_eq!(s["instances"][0]["connections"], 2);
    assert!(
        redis
            .cli(&["HGET", "rakuda:realtime:gateway:gw0", "connections"])
            .unwrap()
            == "2"
    );
    gws[1].sigterm();
    let ok = testkit::wait_until(T, || {
        let base2 = base2.clone();
        async move { stats(&base2).await["total"]["instances"] == 2 }
    })
    .await;
    assert!(ok, "a drained gateway stayed in the roster: {}", stats(&base2).await);
}

async fn publish_order(redis: &RedisServer, id: &str) -> event_bus::EventId {
    let e = NewEvent::new(EventType::ORDER_RECEIVED, Payload::new(id, Action::Created));
    bus(redis).await.publish(&Channel::ORDERS, e).await.unwrap().id
}

async fn ready(base: &str) -> u16 {
    reqwest::get(format!("{base}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Readiness tells the truth: while Redis is down the upstream subscription is down, so
/// /readyz fails (a load balancer stops sending clients) and /status says so; when Redis is
/// back, readiness returns and events flow again. A client that resumed while Redis was down
/// is held open, its replay tried again, and gets what it missed when Redis is back: no end,
/// no reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_redis_is_down() {
    let mut redis = RedisServer::start().unwrap();
    let gws = gateways(&redis, 1, 0);
    let base = gws[0].base();
    assert_eq!(ready(&base).await, 200);
    let before = publish_order(&redis, "before").await;
    let mut cursor = event_bus::Cursor::new();
    cursor.set(Channel::ORDERS, before);
    tokio::task::block_in_place(|| redis.shutdown_save()).unwrap();
    // The gateway learns it on its next read from Redis: poll, bounded.
    let down = testkit::wait_until(T, || {
        let base = base.clone();
        async move { ready(&base).await == 503 }
    })
    .await;
    assert!(down, "/readyz stayed green while Redis was down");
    let status: serde_json::Value = reqwest::get(format!("{base}/api/realtime/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (status["connected"].as_bool(), status["redis"].as_str()),
        (Some(false), Some("down")),
        "{status}"
    );
    // A resume while Redis is down is held (its channel followed once the store answers, then
    // its replay), not refused.
    let url = format!("{base}/api/realtime/events?channels=orders");
    let resuming = tokio::spawn(async move { SseStream::connect(&url, Some(&cursor.to_string())).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let mut resumed = resuming.await.unwrap().unwrap();
    assert_eq!(resumed.status, 200);
    let missed = publish_order(&redis, "missed").await;
    let m = resumed
        .next_message(T)
        .await
        .expect("the stream that resumed while Redis was down ended instead of waiting");
    assert_eq!(serde_json::from_str::<Envelope>(&m.data).unwrap().id, missed);
    let up = testkit::wait_until(T, || {
        let base = base.clone();
        async move { ready(&base).await == 200 }
    })
    .await;
    assert!(up, "/readyz did not recover after Redis came back");
    let mut s = SseStream::connect(&format!("{base}/api/realtime/events?channels=orders"), None)
        .await
        .unwrap();
    s.next_item(T).await;
    let id = bus(&redis)
        .await
        .publish(
            &Channel::ORDERS,
            NewEvent::new(EventType::ORDER_RECEIVED, Payload::new("after", Action::Created)),
        )
        .await
        .unwrap()
        .id;
    let m = s.next_message(T).await.unwrap();
    assert_eq!(serde_json::from_str::<Envelope>(&m.data).unwrap().id, id);
}
