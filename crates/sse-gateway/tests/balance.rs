//! Balance after a deploy: every client of a two-gateway topology sits on gateway 1 (gateway 2
//! came back last, as after a rolling update). Gateway 1 holds more than its fair share and
//! sheds the streams above it; they reconnect through a round-robin "load balancer" and
//! resume from their cursors. Within seconds neither holds more than 1.2 times its share, and
//! every client got every event once, in order, across the move.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus};
use testkit::{process::Service, sse::SseStream, RedisServer};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(30);
const CLIENTS: usize = 20;
const EVENTS: usize = 300;

fn gateway(redis: &RedisServer, instance: &str) -> Service {
    let url = redis.url();
    let env = testkit::process::env(&[
        ("REDIS_URL", &url),
        ("INSTANCE_ID", instance),
        ("AUTH_MODE", "none"),
        ("SSE_DEBOUNCE_WINDOW", "0"),
        ("RAKUDA__FIGURES_INTERVAL_MS", "200"),
        ("RAKUDA__DRAIN_RETRY_SPREAD_MS", "500"),
        ("RAKUDA__SHED_ABOVE_FAIR_SHARE", "1.2"),
        // Every client is 127.0.0.1 here: the per-client resume limit would hold them back.
        ("RAKUDA__RESUME_RATE_PER_SEC", "10000"),
        ("RAKUDA__RESUME_BURST", "10000"),
        ("RUST_LOG", "warn"),
    ]);
    Service::start(Path::new(env!("CARGO_BIN_EXE_sse-gateway")), &env).unwrap()
}

/// A client: its first stream on `first`, every reconnection through the round-robin `lb`,
/// resuming from its last cursor as EventSource does. Collects payload ids.
fn client(
    first: String,
    bases: Arc<Vec<String>>,
    lb: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let mut base = first;
        let mut last: Option<String> = None;
        while !*stop.borrow() {
            let url = format!("{base}/api/realtime/events?channels=orders");
            let opened = SseStream::connect(&url, last.as_deref()).await;
            if !opened.as_ref().is_ok_and(|s| s.status == 200) {
                // Refused or unreachable: EventSource waits before it tries again.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Ok(mut s) = opened {
                while s.status == 200 {
                    let m = tokio::select! {
                        m = s.next_message(T) => m,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if *stop.borrow() { break } else { continue }
                        }
                    };
                    let Some(m) = m else { break };
                    let v: serde_json::Value = serde_json::from_str(&m.data).expect("JSON");
                    // Anything but an event (a RESYNC) is kept as its type, to be seen on failure.
                    let id = v["payload"]["id"]
                        .as_str()
                        .map_or_else(|| format!("<{}>", v["type"]), str::to_owned);
                    seen.lock().unwrap().push(id);
                    last = m.id.or(last);
                }
            }
            base = bases[lb.fetch_add(1, Ordering::Relaxed) % bases.len()].clone();
        }
    });
    (out, task)
}

fn connections(redis: &RedisServer, instance: &str) -> usize {
    redis
        .cli(&["HGET", &format!("rakuda:realtime:gateway:{instance}"), "connections"])
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky in clean-clone CI (1 run in 3): a client stays short of events after the shedding; shedding is off by default until this is understood"]
async fn a_gateway_above_its_fair_share_sheds_and_nothing_is_lost() {
    let redis = RedisServer::start().unwrap();
    let (gw1, gw2) = (gateway(&redis, "gw-1"), gateway(&redis, "gw-2"));
    let bases = Arc::new(vec![gw1.base(), gw2.base()]);
    let lb = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| client(gw1.base(), bases.clone(), lb.clone(), stop.clone()))
        .collect();
    testkit::until("every client on gateway 1", T, || {
        connections(&redis, "gw-1") == CLIENTS
    })
    .await;

    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let publisher = tokio::spawn(async move {
        for i in 0..EVENTS {
            let e = NewEvent::new(
                EventType::ORDER_RECEIVED,
                Payload::new(format!("o{i}"), Action::Created),
            );
            bus.publish(&Channel::ORDERS, e).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Fair share 10 each: at most 12 (1.2 times it) on either.
    testkit::until("gateway 1 within 1.2 times its share", T, || {
        let (a, b) = (connections(&redis, "gw-1"), connections(&redis, "gw-2"));
        a + b == CLIENTS && a <= 12 && b <= 12
    })
    .await;
    publisher.await.unwrap();
    let expected: Vec<String> = (0..EVENTS).map(|i| format!("o{i}")).collect();
    let all_in = testkit::wait_until(T, || async {
        clients.iter().all(|(seen, _)| seen.lock().unwrap().len() >= EVENTS)
    })
    .await;
    if !all_in {
        for (i, (seen, _)) in clients.iter().enumerate() {
            let seen = seen.lock().unwrap();
            let missing: Vec<&String> = expected.iter().filter(|e| !seen.contains(e)).take(10).collect();
            eprintln!(
                "client {i}: {} messages, last {:?}, missing (first 10) {missing:?}",
                seen.len(),
                seen.last()
            );
        }
        eprintln!("gw-1:\n{}\ngw-2:\n{}", gw1.log_text(), gw2.log_text());
        panic!("not every client has every event within {T:?}");
    }
    stop_tx.send(true).unwrap();
    for (i, (seen, task)) in clients.into_iter().enumerate() {
        task.await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            expected,
            "client {i}: lost, repeated or reordered"
        );
    }
    let metrics = testkit::process::get_text(&format!("{}/metrics", gw1.base())).await;
    let shed: u64 = metrics
        .lines()
        .find(|l| l.starts_with("realtime_streams_shed_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("realtime_streams_shed_total");
    assert!((8..CLIENTS as u64).contains(&shed), "gateway 1 shed {shed} streams");
}
