//! `reshard`: `redis-cli --cluster reshard` moves a third of the slots while clients follow
//! and events flow. A Redis Cluster of 3 masters; `orders` with 8 partitions (so several of its
//! slots move); 2 gateways; `clients` SSE clients on `orders`, half on each; `events` events
//! at `rate`/s published through the bus (a publish refused during a slot's move is retried
//! with its idempotency key, as a worker's job is); 2 s in, 5,461 slots move from the first
//! master to the second. Every client must get every event once: lost, duplicated, and how
//! many times clients reconnected.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus};
use serde_json::{json, Value};
use testkit::{cluster::RedisCluster, process::Service};

use crate::{client::Subscriber, hist::Histogram, now_us};

const PARTITIONS: u16 = 8;

/// One run; a JSON line.
pub async fn run(gateway_bin: &Path, env: &HashMap<String, String>, clients: usize, events: usize, rate: u64) -> Value {
    let cluster = Arc::new(RedisCluster::start().expect("a Redis Cluster"));
    let file = std::env::temp_dir().join(format!("rakuda-reshard-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!("[[bus.channels]]\nname = \"orders\"\ntypes = [\"ORDER_RECEIVED\"]\npartitions = {PARTITIONS}\n"),
    )
    .expect("the gateways' configuration");
    let mut env = env.clone();
    env.insert("REDIS_URL".into(), cluster.url());
    env.insert("CONFIG_FILE".into(), file.display().to_string());
    env.insert("RAKUDA__EDGE_THREADS".into(), "1".into());
    let gateways: Vec<Service> = (0..2)
        .map(|_| Service::start(gateway_bin, &env).expect("gateway"))
        .collect();
    let hist = Arc::new(Histogram::new());
    let mut subs = Vec::with_capacity(clients);
    for i in 0..clients {
        let port = gateways[i % 2].port;
        subs.push(
            Subscriber::connect(port, "/api/realtime/events?channels=orders", events, hist.clone())
                .await
                .expect("subscribe"),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut config = BusConfig {
        redis_url: Some(cluster.url()),
        ..Default::default()
    };
    config.channels.retain(|c| c.name == Channel::ORDERS);
    config.channels[0].partitions = PARTITIONS;
    // Where each partition's slot is before the move.
    let slots: Vec<u16> = config
        .streams_of(&Channel::ORDERS)
        .iter()
        .map(|c| {
            let key = config.keys().stream(c);
            cluster
                .cli(&["CLUSTER", "KEYSLOT", &key])
                .expect("KEYSLOT")
                .trim()
                .parse()
                .expect("a slot")
        })
        .collect();
    let owner = |slot: u16| cluster.owners(0, slot).map(|(m, _)| m).unwrap_or(usize::MAX);
    let before: Vec<usize> = slots.iter().map(|s| owner(*s)).collect();
    let bus = RedisBus::connect(config).await.expect("bus");
    let reshard = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let t = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || cluster.reshard(0, 1, 5461)).await;
            (r.map_err(|e| e.to_string()).and_then(|r| r), t.elapsed())
        })
    };
    let period = 1_000_000 / rate;
    let t0 = now_us() + 20_000;
    let mut retried = 0u64;
    for i in 0..events {
        let wait = (t0 + i as u64 * period).saturating_sub(now_us());
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        let event = NewEvent::new(
            EventType::ORDER_RECEIVED,
            Payload::new(i.to_string(), Action::Created).with_data(json!({ "t": t0 + i as u64 * period })),
        )
        .with_idempotency_key(format!("reshard:{i}"));
        let mut tries = 0;
        while let Err(e) = bus.publish(&Channel::ORDERS, event.clone()).await {
            tries += 1;
            retried += 1;
            assert!(tries < 300, "event {i} never published: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (moved, took) = reshard.await.expect("the reshard task");
    let (mut received, mut unique, mut reconnects) = (0u64, 0u64, 0u64);
    for s in subs {
        let r = s.finish(Duration::from_secs(60)).await;
        received += r.received;
        unique += r.unique;
        reconnects += r.reconnects;
    }
    let moved_partitions = slots.iter().zip(&before).filter(|(s, b)| owner(**s) != **b).count();
    let _ = std::fs::remove_file(&file);
    drop(gateways);
    json!({"scenario": "reshard", "clients": clients, "events": events, "rate": rate,
           "slots_moved": if moved.is_ok() { 5461 } else { 0 }, "reshard_error": moved.err(),
           "reshard_seconds": (took.as_secs_f64() * 10.0).round() / 10.0,
           "partitions_moved": moved_partitions,
           "publishes_retried": retried, "lost": (clients * events) as u64 - unique,
           "duplicates": received - unique, "reconnects": reconnects})
}
