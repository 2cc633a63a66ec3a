//! `spread`: how the load spreads over a Redis Cluster's masters. A Cluster of N masters (3,
//! then 6), the load of the capacity model's case in small: 1,000 users' notifications (each
//! in the user's partition of `notifications`) and 4 channels of 8 partitions each, `events`
//! events at `rate`/s, half of them notifications, published through the bus; one subscriber
//! (a gateway's upstream) follows every stream. Each master's CPU from `/proc`, as a share of
//! the total, times N (1.0 is an even share), and the live path's commands from each master's
//! `INFO commandstats`: `SPUBLISH` only, no classic `PUBLISH`.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use event_bus::{Action, Broker, BusConfig, Channel, ChannelSpec, Delivery, EventType, NewEvent, Payload, RedisBus};
use serde_json::{json, Value};
use testkit::cluster::RedisCluster;

use crate::{
    now_us,
    upstream::{commandstats, cpu_us},
};

const USERS: usize = 1_000;
const PARTITIONS: u16 = 8;

fn config(cluster: &RedisCluster) -> BusConfig {
    let mut c = BusConfig {
        redis_url: Some(cluster.url()),
        ..Default::default()
    };
    for spec in &mut c.channels {
        spec.partitions = PARTITIONS;
    }
    c.channels
        .push(ChannelSpec::new(Channel::new("notifications").expect("valid"), vec![]));
    c
}

fn user(i: usize) -> String {
    format!("user-{i}")
}

/// One run on `masters` masters; a JSON line.
pub async fn run(masters: usize, events: usize, rate: u64) -> Value {
    let cluster = RedisCluster::start_masters(masters).expect("a Redis Cluster");
    let config = config(&cluster);
    let notifications = Channel::new("notifications").expect("valid");
    let channels = config.channel_names();
    let public: Vec<Channel> = channels.iter().filter(|c| **c != notifications).cloned().collect();
    let bus = RedisBus::connect(config.clone()).await.expect("bus");
    let listener = RedisBus::connect(config.clone()).await.expect("subscriber bus");
    let mut sub = listener.subscribe(&public, None).await.expect("subscribe");
    let follower = sub.follower();
    for i in 0..USERS {
        let p = notifications.user_partition(&user(i)).expect("a partition");
        follower.follow(p, event_bus::EventId::ZERO).await.expect("follow");
    }
    // Every shard channel subscribed (bounded wait): 32 of the channels and 1,000 users'.
    let want = config.stream_names().len() - 1 + USERS;
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let n: usize = cluster
            .nodes()
            .iter()
            .map(|n| n.cli(&["PUBSUB", "SHARDCHANNELS"]).unwrap_or_default().lines().count())
            .sum();
        if n >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reader = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < events && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(Delivery::Event(e))) => {
                    seen.insert((e.channel.clone(), e.id));
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        seen.len()
    });
    for n in cluster.nodes() {
        n.cli(&["CONFIG", "RESETSTAT"]).expect("resetstat");
    }
    let pids: Vec<u32> = cluster.nodes().iter().map(|n| n.pid().expect("runs")).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_us(*p)).collect();
    // Batches of 20 every 20 ms scaled to the rate, half notifications, half the channels'.
    let batch = 20usize;
    let period = 1_000_000 * batch as u64 / rate;
    let t0 = now_us();
    let mut sent = 0;
    while sent < events {
        let wait = (t0 + (sent / batch) as u64 * period).saturating_sub(now_us());
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        let n = batch.min(events - sent);
        let list: Vec<(Channel, NewEvent)> = (sent..sent + n)
            .map(|i| {
                if i % 2 == 0 {
                    let u = user(i / 2 % USERS);
                    let ev = NewEvent::new(
                        EventType::new("NOTIFICATION").expect("valid"),
                        Payload::new(format!("n{i}"), Action::Created).with_data(json!({ "user_id": u })),
                    );
                    (notifications.user_partition(&u).expect("a partition"), ev)
                } else {
                    let c = &public[i / 2 % public.len()];
                    let ty = event_bus::builtin_channels()
                        .into_iter()
                        .find(|(b, _)| b == c)
                        .map(|(_, t)| t)
                        .expect("a built-in channel");
                    (
                        c.clone(),
                        NewEvent::new(ty, Payload::new(format!("e{}", i % 500), Action::Updated)),
                    )
                }
            })
            .collect();
        bus.publish_batch(list).await.expect("publish");
        sent += n;
    }
    let received = reader.await.unwrap_or(0);
    let cpu: Vec<u64> = pids.iter().zip(&before).map(|(p, b)| cpu_us(*p) - b).collect();
    let total: u64 = cpu.iter().sum::<u64>().max(1);
    let shares: Vec<f64> = cpu
        .iter()
        .map(|c| (*c as f64 / total as f64 * masters as f64 * 100.0).round() / 100.0)
        .collect();
    let (mut spublish, mut publish) = (0u64, 0u64);
    for n in cluster.nodes() {
        let stats = commandstats(n);
        spublish += stats.get("spublish").map_or(0, |s| s.0);
        publish += stats.get("publish").map_or(0, |s| s.0);
    }
    let (min, max) = shares
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    json!({"scenario": "spread", "masters": masters, "events": events, "rate": rate,
           "share_times_n": shares, "min_share_times_n": min, "max_share_times_n": max,
           "redis_cpu_us_per_event": (total as f64 / events as f64 * 10.0).round() / 10.0,
           "spublish": spublish, "publish": publish, "lost": events.saturating_sub(received)})
}

/// `runs` runs on 3 and on 6 masters, each line printed; the medians of the smallest and
/// largest share on stderr; the summary as JSON.
pub async fn suite(runs: usize, events: usize) -> Value {
    let mut summary = serde_json::Map::new();
    for masters in [3usize, 6] {
        let (mut lo, mut hi) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let mut line = self::run(masters, events, 2_000).await;
            line["run"] = json!(run);
            println!("{line}");
            lo.push(line["min_share_times_n"].as_f64().unwrap_or(f64::NAN));
            hi.push(line["max_share_times_n"].as_f64().unwrap_or(f64::NAN));
        }
        let (lo, hi) = (crate::median(lo), crate::median(hi));
        eprintln!(
            "  spread over {masters} masters: each master's share of Redis CPU between {lo:.2}/N and {hi:.2}/N (medians)"
        );
        summary.insert(
            format!("spread.{masters}"),
            json!({"min_share_times_n": lo, "max_share_times_n": hi}),
        );
    }
    Value::Object(summary)
}
