//! Routing throughput and latency of the sinks (`make bench`): the `sinks` binary (release, a
//! real process) on one redis-server routes orders to N signed-webhook destinations, all served
//! by one local receiver (`testkit::receiver`) that answers 200 at once. Each run:
//! - floor: a plain HTTP client (reqwest, one keep-alive connection per destination, one
//!   request at a time per destination, as the sinks deliver in order) posting the same number
//!   of requests of the same size to the same kind of receiver: what the wire and the receiver
//!   cost;
//! - burst: `BURST` orders published at once, to N = 1 and N = 3 destinations: events routed
//!   per second and deliveries per second, from the first publish to the last request
//!   received;
//! - steady: `STEADY_RATE` orders/s for `STEADY_SECS` s to 3 destinations: publish -> the
//!   receiver's accept, p50/p99, with the shipped settings (`delivery.poll_ms` 100).
//!
//! Runs repeat (`BENCH_RUNS`, default 3); figures are medians; ratios against the floor.

use std::{path::Path, time::Duration};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus, Timestamp};
use serde_json::json;
use testkit::{
    process::{env, Service},
    receiver::{Receiver, Reply},
    RedisServer,
};

const BURST: usize = 2_000;
const STEADY_RATE: usize = 50;
const STEADY_SECS: usize = 10;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn order(i: usize) -> NewEvent {
    NewEvent::new(
        EventType::ORDER_RECEIVED,
        Payload::new(format!("ord_{i}"), Action::Created).with_data(json!({
            "marketplace": "ebay", "total": 129.5, "currency": "USD", "sent_ms": Timestamp::now_ms(),
        })),
    )
}

/// Waits (bounded) until the receiver has `n` requests; the time of the last one.
async fn received(r: &Receiver, n: usize) -> std::time::Instant {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let all = r.requests();
        if all.len() >= n {
            return all[n - 1].at;
        }
        assert!(std::time::Instant::now() < deadline, "{} of {n} requests", all.len());
        // Polling the receiver's record: it has no event to await.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The plain client: `n` requests to each of `dests` destinations, each destination's in
/// order; requests per second.
async fn floor(r: &Receiver, dests: usize, n: usize, body: &[u8]) -> f64 {
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for d in 0..dests {
        let (url, body) = (format!("{}/floor/{d}", r.base()), body.to_vec());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..n {
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (dests * n) as f64 / start.elapsed().as_secs_f64()
}

fn config(receiver: &Receiver, dests: usize) -> String {
    let mut c = String::from("[delivery.rates]\n");
    for d in 0..dests {
        c.push_str(&format!("d{d} = 10000\n"));
    }
    for d in 0..dests {
        c.push_str(&format!(
            "[destinations.d{d}]\nkind = \"webhook\"\nurl = \"{}/d{d}\"\nsecrets = [\"{SECRET}\"]\n",
            receiver.base()
        ));
    }
    let names: Vec<String> = (0..dests).map(|d| format!("\"d{d}\"")).collect();
    c.push_str(&format!(
        "[routes.orders]\nchannels = [\"orders\"]\ndestinations = [{}]\n",
        names.join(", ")
    ));
    c
}

/// What one measurement runs on: the service, its receiver, its configuration's directory.
type Running = (Service, Receiver, tempfile::TempDir);

/// A sinks service routing to `dests` destinations of a fresh receiver, ready, under a fresh
/// key prefix (so its channel starts at the newest event), and a bus to publish on.
async fn sinks(redis: &RedisServer, dests: usize) -> (Running, RedisBus) {
    let receiver = Receiver::start(|_, _| Reply::ok("{}"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sinks.toml");
    std::fs::write(&file, config(&receiver, dests)).unwrap();
    let url = redis.url();
    let prefix = format!("bench{dests}{}:", Timestamp::now_ms());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("REALTIME_PREFIX", prefix.as_str()),
        ("CONFIG_FILE", file.to_str().unwrap()),
        ("RUST_LOG", "warn"),
    ];
    let svc = Service::start(Path::new(env!("CARGO_BIN_EXE_sinks")), &env(&vars)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while testkit::http_status(svc.port, "/readyz") != Some(200) {
        assert!(std::time::Instant::now() < deadline, "sinks not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(url),
        prefix,
        ..Default::default()
    })
    .await
    .unwrap();
    ((svc, receiver, dir), bus)
}

async fn burst(redis: &RedisServer, dests: usize) -> (f64, usize) {
    let ((_svc, receiver, _dir), bus) = sinks(redis, dests).await;
    let start = std::time::Instant::now();
    let events: Vec<(Channel, NewEvent)> = (0..BURST).map(|i| (Channel::ORDERS, order(i))).collect();
    for chunk in events.chunks(500) {
        bus.publish_batch(chunk.to_vec()).await.unwrap();
    }
    let last = received(&receiver, BURST * dests).await;
    let body = receiver.requests()[0].body.len();
    (BURST as f64 / last.duration_since(start).as_secs_f64(), body)
}

async fn steady(redis: &RedisServer) -> Vec<f64> {
    let ((_svc, receiver, _dir), bus) = sinks(redis, 3).await;
    let n = STEADY_RATE * STEADY_SECS;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / STEADY_RATE as u32);
    for i in 0..n {
        tick.tick().await;
        bus.publish(&Channel::ORDERS, order(i)).await.unwrap();
    }
    received(&receiver, n * 3).await;
    let now = (Timestamp::now_ms(), std::time::Instant::now());
    receiver
        .requests()
        .iter()
        .map(|r| {
            let sent = r.json()["data"]["payload"]["data"]["sent_ms"].as_u64().unwrap();
            // When the receiver read it, in Unix ms.
            let at = now.0 - now.1.duration_since(r.at).as_millis() as u64;
            at.saturating_sub(sent) as f64
        })
        .collect()
}

fn main() {
    if !testkit::bench::measuring() {
        return;
    }
    let runs = testkit::bench::runs(3);
    testkit::bench::runtime().block_on(async move {
        let mut m = testkit::bench::Figures::default();
        for run in 0..runs {
            let redis = RedisServer::start().expect("start redis-server (make bench installs it)");
            let (one, body) = burst(&redis, 1).await;
            let (three, _) = burst(&redis, 3).await;
            let plain = Receiver::start(|_, _| Reply::ok("{}"));
            let floor1 = floor(&plain, 1, BURST, &vec![b'x'; body]).await;
            let floor3 = floor(&plain, 3, BURST, &vec![b'x'; body]).await;
            let mut lat = steady(&redis).await;
            let (p50, p99) = (
                testkit::bench::quantile(&mut lat, 0.5),
                testkit::bench::quantile(&mut lat, 0.99),
            );
            let figures = [
                ("burst_1_dest_events_per_s", one),
                ("burst_3_dest_events_per_s", three),
                ("burst_3_dest_deliveries_per_s", three * 3.0),
                ("floor_1_dest_requests_per_s", floor1),
                ("floor_3_dest_requests_per_s", floor3),
                ("ratio_1_dest_vs_floor", one / floor1),
                ("ratio_3_dest_vs_floor", three * 3.0 / floor3),
                ("steady_publish_to_accept_p50_ms", p50),
                ("steady_publish_to_accept_p99_ms", p99),
            ];
            let line: serde_json::Map<String, serde_json::Value> =
                figures.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            println!("{}", json!({"bench": "sinks", "run": run, "figures": line}));
            m.record(figures);
        }
        m.print_summary(
            "sinks",
            runs,
            &format!(
                "{BURST} orders at once to 1 and 3 webhook destinations; {STEADY_RATE}/s for {STEADY_SECS} s to 3"
            ),
        );
    });
}
