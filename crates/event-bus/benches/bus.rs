//! Bus benchmark against a real redis-server on loopback (`make bench`).
//!
//! Each run measures, on one redis-server started here:
//! - baseline: raw fred, pipelined plain `PUBLISH` (the Phase 27 Node design) and plain
//!   `XADD` (storage without atomic announce or dedupe), 100k commands each;
//! - bus publish: one at a time (awaited), 64 concurrent publishers, and batches of 1000;
//! - latency: publish -> subscriber at a steady 1k events/s for 5 s, counted from the publish
//!   call; also from each event's scheduled send time (a stall of the publisher shows up there,
//!   as does the pacer's timer error of up to 1 ms).
//!
//! Runs repeat (`BENCH_RUNS`, default 5); the figures are medians, and the ratios compare
//! the bus with the baseline measured in the same run. Output: one JSON line per run, then a
//! summary line and a table.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use event_bus::{Action, Broker, BusConfig, Channel, Delivery, EventType, NewEvent, Payload, RedisBus};
use fred::{
    interfaces::{ClientLike, PubsubInterface, StreamsInterface},
    prelude::{Builder, Config},
    types::Value,
};
use serde_json::json;

const RAW_N: usize = 100_000;
const SINGLE_N: usize = 20_000;
const CONCURRENT_N: usize = 100_000;
const BATCH_N: usize = 200_000;
const LATENCY_RATE: u64 = 1_000;
const LATENCY_SECS: u64 = 5;

fn event(i: usize) -> NewEvent {
    NewEvent::new(
        EventType::ORDER_RECEIVED,
        Payload::new(format!("ord_{i}"), Action::Created).with_data(json!({"marketplace": "ebay", "total": 129.5})),
    )
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn raw_pipelined(url: &str, xadd: bool) -> f64 {
    let client = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    client.init().await.unwrap();
    let body = serde_json::to_string(&json!({"type":"ORDER_RECEIVED","payload":{"id":"ord_1","action":"created","data":{"marketplace":"ebay","total":129.5}},"timestamp":"2026-11-23T03:00:00.123Z"})).unwrap();
    let start = Instant::now();
    for chunk in 0..RAW_N / 1000 {
        let futs = (0..1000).map(|_| {
            let client = &client;
            let body = body.clone();
            async move {
                if xadd {
                    let _: Value = client
                        .xadd("bench:raw:stream", false, ("MAXLEN", "~", 100_000), "*", ("e", body))
                        .await
                        .unwrap();
                } else {
                    let _: Value = client.publish("bench:raw:channel", body).await.unwrap();
                }
            }
        });
        futures::future::join_all(futs).await;
        let _ = chunk;
    }
    let r = rate(RAW_N, start.elapsed());
    let _ = client.quit().await;
    r
}

async fn bus_for(url: &str, run: usize) -> RedisBus {
    RedisBus::connect(BusConfig {
        redis_url: Some(url.to_owned()),
        prefix: format!("bench{run}:rakuda:realtime:"),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn bus_single(bus: &RedisBus) -> f64 {
    let start = Instant::now();
    for i in 0..SINGLE_N {
        bus.publish(&Channel::ORDERS, event(i)).await.unwrap();
    }
    rate(SINGLE_N, start.elapsed())
}

async fn bus_concurrent(bus: &RedisBus) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..CONCURRENT_N / 64 {
                    bus.publish(&Channel::ORDERS, event(t * 1_000_000 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    rate(CONCURRENT_N / 64 * 64, start.elapsed())
}

async fn bus_batched(bus: &RedisBus) -> f64 {
    let start = Instant::now();
    for b in 0..BATCH_N / 1000 {
        let batch = (0..1000).map(|i| (Channel::ORDERS, event(b * 1000 + i))).collect();
        bus.publish_batch(batch).await.unwrap();
    }
    rate(BATCH_N, start.elapsed())
}

/// Latency figures in ms.
struct Latency {
    /// From the publish call to the subscriber, p50 / p99 / max.
    sent: (f64, f64, f64),
    /// From the scheduled send time (includes the pacer's timer error, up to 1 ms), p99.
    scheduled_p99: f64,
    lost: usize,
}

async fn latency(bus: &RedisBus) -> Latency {
    let n = (LATENCY_RATE * LATENCY_SECS) as usize;
    let mut sub = bus.subscribe(&[Channel::PRICING], None).await.unwrap();
    let epoch = Instant::now() + Duration::from_millis(50);
    // Per event: (scheduled send time, actual send time).
    type Sent = Option<(Instant, Instant)>;
    let scheduled: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(vec![None; n]));
    let publisher = {
        let bus = bus.clone();
        let scheduled = scheduled.clone();
        tokio::spawn(async move {
            let period = Duration::from_nanos(1_000_000_000 / LATENCY_RATE);
            for i in 0..n {
                let at = epoch + period * i as u32;
                tokio::time::sleep_until(at.into()).await;
                scheduled.lock().unwrap()[i] = Some((at, Instant::now()));
                let e = NewEvent::new(EventType::PRICE_CHANGE, Payload::new(format!("{i}"), Action::Updated));
                bus.publish(&Channel::PRICING, e).await.unwrap();
            }
        })
    };
    let mut lat = Vec::with_capacity(n);
    let mut from_schedule = Vec::with_capacity(n);
    let deadline = epoch + Duration::from_secs(LATENCY_SECS + 10);
    while lat.len() < n {
        let d = tokio::time::timeout_at(deadline.into(), sub.next()).await;
        let Ok(Some(Delivery::Event(e))) = d else { break };
        let now = Instant::now();
        let i: usize = e.payload.id.parse().unwrap();
        let (at, sent) = scheduled.lock().unwrap()[i].expect("published before received");
        lat.push(now.duration_since(sent).as_secs_f64() * 1000.0);
        from_schedule.push(now.duration_since(at).as_secs_f64() * 1000.0);
    }
    publisher.await.unwrap();
    let lost = n - lat.len();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    from_schedule.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Latency {
        sent: (percentile(&lat, 0.5), percentile(&lat, 0.99), *lat.last().unwrap()),
        scheduled_p99: percentile(&from_schedule, 0.99),
        lost,
    }
}

fn main() {
    testkit::bench::with_redis(5, |server, runs| async move {
        let url = server.url();
        let mut m = testkit::bench::Figures::default();
        for run in 0..runs {
            let _ = server.cli(&["FLUSHALL"]);
            let base_pub = raw_pipelined(&url, false).await;
            let base_xadd = raw_pipelined(&url, true).await;
            let bus = bus_for(&url, run).await;
            let single = bus_single(&bus).await;
            let concurrent = bus_concurrent(&bus).await;
            let batched = bus_batched(&bus).await;
            let l = latency(&bus).await;
            let ((p50, p99, max), lost) = (l.sent, l.lost);
            let line = json!({
                "bench": "bus", "run": run,
                "baseline_publish_per_s": base_pub.round(), "baseline_xadd_per_s": base_xadd.round(),
                "bus_single_per_s": single.round(), "bus_concurrent64_per_s": concurrent.round(),
                "bus_batch1000_per_s": batched.round(),
                "latency_1k_per_s_ms": {"p50": p50, "p99": p99, "max": max, "p99_from_schedule": l.scheduled_p99, "lost": lost},
            });
            println!("{line}");
            m.record([
                ("baseline_publish_per_s", base_pub),
                ("baseline_xadd_per_s", base_xadd),
                ("bus_single_per_s", single),
                ("bus_concurrent64_per_s", concurrent),
                ("bus_batch1000_per_s", batched),
                ("latency_p50_ms", p50),
                ("latency_p99_ms", p99),
                ("latency_max_ms", max),
                ("latency_p99_from_schedule_ms", l.scheduled_p99),
                ("lost", lost as f64),
                ("ratio_batch_vs_xadd", batched / base_xadd),
                ("ratio_concurrent_vs_xadd", concurrent / base_xadd),
                ("ratio_batch_vs_publish", batched / base_pub),
            ]);
        }
        m.print_summary("bus", runs, "redis-server on loopback, 2-core machine");
    });
}
