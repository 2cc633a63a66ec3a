//! The load: order jobs through BullMQ (real npm `bullmq`, `tests/node/soak-producer.mjs`;
//! the worker-emitter turns each into `ORDER_RECEIVED` on `orders`) and direct publishes
//! through `event-bus` on `inventory`, `pricing` and `listings`, as a Rust worker does.
//!
//! Every event is numbered per channel: direct payload ids are `d-<seq>` with the send time
//! in `data.t`; order ids are `soak-<seq>-<ms>`. What was acknowledged (the job added, the
//! publish answered) is recorded: that is what every client of the channel must receive.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{watch, Semaphore},
};

/// The channels direct publishes go to, with their event types.
pub const DIRECT: [(&str, &str); 3] = [
    ("inventory", "INVENTORY_CHANGE"),
    ("pricing", "PRICE_CHANGE"),
    ("listings", "LISTING_UPDATE"),
];

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A growable set of sequence numbers.
#[derive(Default, Clone)]
pub struct Bits {
    words: Vec<u64>,
    count: u64,
}

impl Bits {
    /// Adds `seq`; false if it was there already.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, bit) = ((seq / 64) as usize, seq % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let had = self.words[w] & (1 << bit) != 0;
        self.words[w] |= 1 << bit;
        if !had {
            self.count += 1;
        }
        !had
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    /// The first and the last of `self` missing from `other`, if any is.
    pub fn missing_span(&self, other: &Bits) -> Option<(u64, u64)> {
        let missing = |i: usize, w: u64| w & !other.words.get(i).copied().unwrap_or(0);
        let first = self.words.iter().enumerate().find(|(i, w)| missing(*i, **w) != 0)?;
        let last = self
            .words
            .iter()
            .enumerate()
            .rev()
            .find(|(i, w)| missing(*i, **w) != 0)?;
        let f = first.0 as u64 * 64 + u64::from(missing(first.0, *first.1).trailing_zeros());
        let l = last.0 as u64 * 64 + 63 - u64::from(missing(last.0, *last.1).leading_zeros());
        Some((f, l))
    }

    /// How many of `self` are missing from `other`.
    pub fn missing_from(&self, other: &Bits) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

/// An event's sequence number and send time (ms), from its payload.
pub fn seq_and_time(payload: &Value) -> Option<(u64, u64)> {
    let id = payload["id"].as_str()?;
    if let Some(seq) = id.strip_prefix("d-") {
        return Some((seq.parse().ok()?, payload["data"]["t"].as_u64()?));
    }
    let (seq, ms) = id.strip_prefix("soak-")?.split_once('-')?;
    Some((seq.parse().ok()?, ms.parse().ok()?))
}

/// What was acknowledged, per channel; and what was refused.
#[derive(Default)]
pub struct Acked {
    pub by_channel: HashMap<&'static str, Bits>,
    pub refused: HashMap<&'static str, u64>,
}

pub type SharedAcked = Arc<Mutex<Acked>>;

/// Direct publishes at `rate` per second over [`DIRECT`], paced on the clock, until `stop`.
pub async fn publish_direct(redis_url: String, rate: f64, acked: SharedAcked, mut stop: watch::Receiver<bool>) {
    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(redis_url),
        ..Default::default()
    })
    .await
    .expect("the soak's publisher connects to Redis");
    let bus = Arc::new(bus);
    // Publishes in flight at once: a Redis outage must not pile up tasks without bound.
    let slots = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut seqs = [0u64; 3];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let k = (sent % 3) as usize;
            sent += 1;
            let (name, ty) = DIRECT[k];
            let seq = seqs[k];
            seqs[k] += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                *acked.lock().unwrap().refused.entry(name).or_default() += 1;
                continue;
            };
            let (bus, acked) = (bus.clone(), acked.clone());
            tokio::spawn(async move {
                let event = NewEvent::new(
                    EventType::new(ty).expect("builtin type"),
                    Payload::new(format!("d-{seq}"), Action::Updated).with_data(json!({"t": now_ms()})),
                );
                let channel = Channel::new(name).expect("builtin channel");
                let ok = tokio::time::timeout(Duration::from_secs(10), bus.publish(&channel, event)).await;
                let mut a = acked.lock().unwrap();
                match ok {
                    Ok(Ok(_)) => {
                        a.by_channel.entry(name).or_default().insert(seq);
                    }
                    _ => *a.refused.entry(name).or_default() += 1,
                }
                drop(permit);
            });
        }
    }
    // What is in flight settles (each publish is bounded by its timeout).
    let _ = slots.acquire_many(256).await;
}

/// The Node BullMQ producer at `rate` jobs per second until `stop`; its acknowledgements go to
/// `acked` under `orders`. Returns once the producer has settled its adds and exited.
pub async fn produce_jobs(redis_port: u16, rate: f64, acked: SharedAcked, mut stop: watch::Receiver<bool>) {
    let script = testkit::node_dir().join("soak-producer.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .current_dir(testkit::node_dir())
        .env("REDIS_PORT", redis_port.to_string())
        .env("RATE", rate.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the BullMQ producer (make deps-node)");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stdin = child.stdin.take();
    let mut stopping = false;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                stdin.take(); // closing stdin stops it (it settles what is in flight first)
                continue;
            }
        };
        let Ok(Some(line)) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["done"] == true {
            break;
        }
        let mut a = acked.lock().unwrap();
        for s in v["acked"].as_array().into_iter().flatten().filter_map(Value::as_u64) {
            a.by_channel.entry("orders").or_default().insert(s);
        }
        let failed = v["failed"].as_array().map_or(0, Vec::len) as u64;
        *a.refused.entry("orders").or_default() += failed;
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
}
