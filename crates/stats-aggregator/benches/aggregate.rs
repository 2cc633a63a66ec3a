//! Aggregation throughput against a real redis-server on loopback (`make bench`).
//!
//! Each run, on one redis-server started here, with 200k events stored over the four channels:
//! - baseline: reading every entry with the bus' own paged replay (4 channels in parallel, pages
//!   of 1000), doing nothing with them: the floor any aggregator of these streams stands on;
//! - backfill: the aggregator, in this process, from an empty store until every channel's
//!   marker reached its head: events aggregated per second;
//! - live: the aggregator running while 100k more events are published as fast as the bus
//!   takes them (batches of 1000): how long after the last publish it has caught up.
//!
//! Runs repeat (`BENCH_RUNS`, default 5); figures are medians, ratios are against the baseline
//! of the same run. Output: one JSON line per run, then a summary line and a table.

use std::time::{Duration, Instant};

use event_bus::{Action, AnyBus, Broker, BusConfig, Channel, EventId, EventType, NewEvent, Payload, RedisBus};
use fred::interfaces::HashesInterface;
use serde_json::json;
use stats_aggregator::{Aggregator, AggregatorConfig, Store};
use tokio_util::sync::CancellationToken;

const BACKFILL_N: usize = 200_000;
const LIVE_N: usize = 100_000;

fn channels() -> [(Channel, EventType); 4] {
    [
        (Channel::ORDERS, EventType::ORDER_RECEIVED),
        (Channel::INVENTORY, EventType::INVENTORY_CHANGE),
        (Channel::PRICING, EventType::PRICE_CHANGE),
        (Channel::LISTINGS, EventType::LISTING_UPDATE),
    ]
}

async fn fill(bus: &RedisBus, n: usize) {
    let chans = channels();
    for start in (0..n).step_by(1000) {
        let batch = (start..(start + 1000).min(n))
            .map(|i| {
                let (c, t) = chans[i % 4].clone();
                let action = [Action::Created, Action::Updated, Action::Deleted][i % 3];
                (c, NewEvent::new(t, Payload::new(format!("e{i}"), action)))
            })
            .collect();
        bus.publish_batch(batch).await.unwrap();
    }
}

async fn read_all(bus: &RedisBus) -> usize {
    let tasks = channels().map(|(c, _)| {
        let bus = bus.clone();
        tokio::spawn(async move {
            let (mut after, mut n) = (EventId::ZERO, 0);
            loop {
                let page = bus.replay(&c, after, 1000).await.unwrap();
                n += page.events.len() + page.malformed.len();
                after = page.last;
                if page.at_head {
                    return n;
                }
            }
        })
    });
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

/// Waits until every channel's marker in today's (or the head's) day hash equals its head.
async fn caught_up(bus: &RedisBus) {
    let chans: Vec<Channel> = channels().iter().map(|(c, _)| c.clone()).collect();
    let head = bus.head(&chans).await.unwrap();
    loop {
        let mut all = true;
        for c in &chans {
            let id = head.get(c).unwrap();
            let key = stats_aggregator::day::day_key("rakuda:realtime:", stats_aggregator::day::day_of(id));
            let marker: Option<String> = bus.client().hget(key, format!("progress:{c}")).await.unwrap();
            all &= marker == Some(id.to_string());
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn main() {
    testkit::bench::with_redis(5, |server, runs| async move {
        let config = BusConfig {
            redis_url: Some(server.url()),
            ..Default::default()
        };
        let mut m = testkit::bench::Figures::default();
        for run in 0..runs {
            let _ = server.cli(&["FLUSHALL"]);
            let bus = RedisBus::connect(config.clone()).await.unwrap();
            fill(&bus, BACKFILL_N).await;

            let t = Instant::now();
            let read = read_all(&bus).await;
            let baseline = read as f64 / t.elapsed().as_secs_f64();

            let settings = AggregatorConfig {
                poll_interval_ms: 10,
                bus: config.clone(),
                ..Default::default()
            };
            let any = AnyBus::Redis(bus.clone());
            let stop = CancellationToken::new();
            let t = Instant::now();
            let agg = tokio::spawn(Aggregator::new(any.clone(), Store::for_bus(&any), settings).run(stop.clone()));
            caught_up(&bus).await;
            let backfill = BACKFILL_N as f64 / t.elapsed().as_secs_f64();

            let t = Instant::now();
            fill(&bus, LIVE_N).await;
            let published = t.elapsed();
            let t = Instant::now();
            caught_up(&bus).await;
            let live_lag_ms = t.elapsed().as_secs_f64() * 1000.0;
            let live_rate = LIVE_N as f64 / published.as_secs_f64();
            stop.cancel();
            agg.await.unwrap();

            let line = json!({
                "bench": "stats-aggregator", "run": run,
                "baseline_read_per_s": baseline.round(), "backfill_per_s": backfill.round(),
                "ratio_backfill_vs_read": backfill / baseline,
                "live_publish_per_s": live_rate.round(), "live_caught_up_after_ms": live_lag_ms,
            });
            println!("{line}");
            m.record([
                ("baseline_read_per_s", baseline),
                ("backfill_per_s", backfill),
                ("ratio_backfill_vs_read", backfill / baseline),
                ("live_publish_per_s", live_rate),
                ("live_caught_up_after_ms", live_lag_ms),
            ]);
        }
        m.print_summary("stats-aggregator", runs, "redis-server on loopback, 2-core machine");
    });
}
