//! `notifications`: what one user's private notifications cost Redis as gateways are added.
//! One redis-server, N gateways (1 and 16); the user (`dev`, `AUTH_MODE=none`) has one stream
//! on the first gateway, and `count` notifications for that user are created at `rate`/s over
//! `POST /api/notifications` on 4 connections. Redis's CPU over the run, per notification
//! (the store's writes and the publish), and whether the stream got each one once.
//!
//! Each user's notifications live in the user's partition of the private channel, so only the
//! gateway with the user's stream follows them: with 16 gateways Redis should pay what it
//! pays with one (`notifications.16_vs_1`). Before partitions every gateway heard each one.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use testkit::{process::Service, sse::SseStream, RedisServer};

use crate::upstream::{cpu_us, gateways_env, post_paced};

/// The notification titles in a message (one, or a group's).
fn titles(data: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    if v["type"] != "NOTIFICATION" {
        return Vec::new();
    }
    let one = |p: &Value| p["data"]["notification"]["title"].as_str().map(str::to_owned);
    match v.get("payloads").and_then(Value::as_array) {
        Some(ps) => ps.iter().filter_map(one).collect(),
        None => one(&v["payload"]).into_iter().collect(),
    }
}

/// One run with `gateways` gateways; a JSON line.
pub async fn run(gateway_bin: &Path, env: &HashMap<String, String>, gateways: usize, count: usize, rate: u64) -> Value {
    let redis = RedisServer::start().expect("redis-server");
    let env = gateways_env(env, &redis);
    let services: Vec<Service> = (0..gateways)
        .map(|_| Service::start(gateway_bin, &env).expect("gateway"))
        .collect();
    let url = format!(
        "{}/api/realtime/events?channels=notifications&notifications=true",
        services[0].base()
    );
    let mut stream = SseStream::connect(&url, None).await.expect("stream");
    assert_eq!(stream.status, 200, "the user's stream");
    let first = stream
        .next_message(Duration::from_secs(10))
        .await
        .expect("the unread snapshot");
    assert!(first.data.contains("NOTIFICATION_UNREAD"), "{}", first.data);
    let reader = tokio::spawn(async move {
        let (mut seen, mut received) = (HashSet::new(), 0usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < count && Instant::now() < deadline {
            let Some(m) = stream.next_message(Duration::from_secs(10)).await else {
                break;
            };
            for t in titles(&m.data) {
                received += 1;
                seen.insert(t);
            }
        }
        (seen.len(), received)
    });
    // The user's partition is followed once the stream is open (bounded wait).
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let n = redis.cli(&["PUBSUB", "SHARDCHANNELS"]).unwrap_or_default();
        if n.contains("notifications#") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = redis.pid().expect("redis runs");
    let cpu_before = cpu_us(pid);
    let rejected = post_paced(services[0].port, "/api/notifications", count, rate, 201, |i, _| {
        format!(r#"{{"user_id":"dev","type":"info","title":"n{i}","message":"stock is out"}}"#)
    })
    .await;
    let (unique, received) = reader.await.expect("reader");
    let cpu = cpu_us(pid) - cpu_before;
    let shard_channels = redis.cli(&["PUBSUB", "SHARDCHANNELS"]).unwrap_or_default();
    drop(services);
    json!({"scenario": "notifications", "gateways": gateways, "notifications": count, "rate": rate,
           "redis_cpu_us_per_notification": (cpu as f64 / count as f64 * 10.0).round() / 10.0,
           "shard_channels": shard_channels.lines().filter(|l| !l.trim().is_empty()).count(),
           "rejected": rejected, "lost": count.saturating_sub(unique), "duplicates": received - unique})
}

/// `runs` runs with 1 and 16 gateways, each line printed; the medians and the ratio on stderr;
/// the summary as JSON.
pub async fn suite(gateway_bin: &Path, env: &HashMap<String, String>, runs: usize, count: usize) -> Value {
    let mut cpu: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        for n in [1usize, 16] {
            let mut line = self::run(gateway_bin, env, n, count, 500).await;
            line["run"] = json!(run);
            println!("{line}");
            cpu.entry(n)
                .or_default()
                .push(line["redis_cpu_us_per_notification"].as_f64().unwrap_or(f64::NAN));
        }
    }
    let (one, sixteen) = (crate::median(cpu[&1].clone()), crate::median(cpu[&16].clone()));
    let ratio = (sixteen / one * 100.0).round() / 100.0;
    eprintln!(
        "  notifications to one user: Redis CPU {one:.1} us/notification with 1 gateway, {sixteen:.1} with 16 ({ratio}x)"
    );
    json!({"notifications.1": {"redis_cpu_us_per_notification": one},
           "notifications.16": {"redis_cpu_us_per_notification": sixteen, "vs_one_gateway": ratio}})
}
