//! End-to-end job throughput and latency (`make bench`): Node adds jobs with npm `bullmq`, the
//! Rust worker (release build, a real process) processes them, a bus subscriber receives the
//! events. Each run, on one redis-server started here:
//! - floor: the same Node producer with a trivial Node BullMQ worker (concurrency 8) on another
//!   queue: what the queue itself costs, measured in the same run;
//! - burst: 20k jobs added at once: jobs/s from the first add to the last event delivered;
//! - steady: 1000 jobs/s for 10 s: add -> event latency p50/p99.
//!
//! Runs repeat (`BENCH_RUNS`, default 3); figures are medians; ratios against the floor.

use std::{collections::HashMap, path::Path, time::Duration};

use event_bus::{Broker, BusConfig, Channel, Delivery, RedisBus};
use serde_json::json;
use testkit::{node::NodeScript, process::Service, RedisServer};

const BURST: usize = 20_000;
const STEADY_RATE: usize = 1_000;
const STEADY_N: usize = 10_000;

fn now_ms() -> u64 {
    event_bus::Timestamp::now_ms()
}

/// Runs the Node producer and collects each event's add -> delivered latency (ms).
async fn measure(redis: &RedisServer, bus: &RedisBus, n: usize, rate: usize) -> (f64, Vec<f64>) {
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let started = now_ms();
    let node = NodeScript::start(
        "bullmq-driver.mjs",
        &["bench", "orders", &n.to_string(), &rate.to_string()],
        &[("REDIS_PORT", redis.port().to_string())],
    );
    let mut lat = Vec::with_capacity(n);
    let mut last = started;
    while lat.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(120), sub.next())
            .await
            .expect("events stopped")
            .unwrap();
        if let Delivery::Event(env) = d {
            let at = now_ms();
            let added: u64 = env.payload.id.rsplit('_').next().unwrap().parse().unwrap();
            lat.push(at.saturating_sub(added) as f64);
            last = at;
        }
    }
    tokio::task::block_in_place(|| node.finish(Duration::from_secs(120)));
    (n as f64 / ((last - started) as f64 / 1000.0), lat)
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
            // Floor: the Node producer and a trivial Node worker.
            let r = tokio::task::block_in_place(|| {
                NodeScript::start(
                    "bullmq-driver.mjs",
                    &["bench", "floor", &BURST.to_string(), "0", "floor"],
                    &[("REDIS_PORT", redis.port().to_string())],
                )
                .finish(Duration::from_secs(300))
            });
            let floor = BURST as f64 / (r["doneMs"].as_f64().unwrap() / 1000.0);
            let env: HashMap<String, String> = [
                ("REDIS_URL", redis.url()),
                ("INSTANCE_ID", "bench".into()),
                ("PROCESSORS", "orders".into()),
                ("RUST_LOG", "warn".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(
                // BENCH_WORKER_CONCURRENCY=n compares concurrency settings (default: the worker's).
                std::env::var("BENCH_WORKER_CONCURRENCY")
                    .ok()
                    .map(|c| ("WORKER_CONCURRENCY".to_owned(), c)),
            )
            .collect();
            let _w = Service::start(Path::new(env!("CARGO_BIN_EXE_worker-emitter")), &env).unwrap();
            let bus = RedisBus::connect(BusConfig {
                redis_url: Some(redis.url()),
                ..Default::default()
            })
            .await
            .unwrap();
            let (burst, _) = measure(&redis, &bus, BURST, 0).await;
            let (_, mut lat) = measure(&redis, &bus, STEADY_N, STEADY_RATE).await;
            let (p50, p99) = (
                testkit::bench::quantile(&mut lat, 0.5),
                testkit::bench::quantile(&mut lat, 0.99),
            );
            println!(
                "{}",
                json!({"bench": "jobs", "run": run, "floor_node_worker_jobs_per_s": floor.round(),
                       "burst_jobs_per_s": burst.round(),
                       "steady_1k_per_s_latency_ms": {"p50": p50, "p99": p99}})
            );
            m.record([
                ("floor_node_worker_jobs_per_s", floor),
                ("burst_jobs_per_s", burst),
                ("ratio_burst_vs_floor", burst / floor),
                ("steady_1k_per_s_latency_p50_ms", p50),
                ("steady_1k_per_s_latency_p99_ms", p99),
            ]);
        }
        m.print_summary(
            "jobs",
            runs,
            "Node bullmq producer -> Rust worker -> bus subscriber, loopback",
        );
    });
}
