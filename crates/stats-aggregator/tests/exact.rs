//! The aggregator as a real process over a real redis-server: exact daily counts through
//! SIGKILLs, with two replicas, across UTC midnight, with malformed entries, from a backfill.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::Duration,
};

use chrono::{NaiveDate, Utc};
use event_bus::{Action, Broker, Channel, EventId, EventType, NewEvent, Payload, RedisBus};
use testkit::{process::Service, RedisServer};

const T: Duration = Duration::from_secs(60);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stats-aggregator"))
}

fn env(redis: &RedisServer, instance: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut e: HashMap<String, String> = [
        ("REDIS_URL", redis.url()),
        ("INSTANCE_ID", instance.to_owned()),
        ("RAKUDA__POLL_INTERVAL_MS", "20".to_owned()),
        ("RAKUDA__GATEWAY_INTERVAL_MS", "200".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        e.insert((*k).to_owned(), (*v).to_owned());
    }
    e
}

async fn bus(redis: &RedisServer) -> RedisBus {
    testkit::bus::redis_bus(redis).await
}

/// What the day hashes must hold: field -> count, per day.
#[derive(Default, Debug)]
struct Expected {
    days: BTreeMap<NaiveDate, BTreeMap<String, i64>>,
    last: HashMap<String, EventId>,
}

impl Expected {
    fn add(&mut self, day: NaiveDate, field: String) {
        *self.days.entry(day).or_default().entry(field).or_default() += 1;
    }

    fn event(&mut self, channel: &Channel, ty: &EventType, action: &str, id: EventId) {
        let day = stats_aggregator::day::day_of(id);
        let hour = stats_aggregator::day::at(id.ms).format("%H").to_string();
        self.add(day, "events".into());
        self.add(day, format!("type:{ty}"));
        self.add(day, format!("channel:{channel}"));
        self.add(day, format!("action:{action}"));
        self.add(day, format!("hour:{hour}"));
        self.seen(channel, id);
    }

    fn malformed(&mut self, channel: &Channel, kind: &str, id: EventId) {
        let day = stats_aggregator::day::day_of(id);
        self.add(day, "malformed".into());
        self.add(day, format!("malformed:{kind}"));
        self.seen(channel, id);
    }

    fn seen(&mut self, channel: &Channel, id: EventId) {
        let e = self.last.entry(channel.to_string()).or_default();
        *e = (*e).max(id);
    }
}

fn hash(redis: &RedisServer, day: NaiveDate) -> HashMap<String, String> {
    let out = redis
        .cli(&["HGETALL", &format!("rakuda:realtime:stats:{}", day.format("%Y-%m-%d"))])
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_owned(), c[1].to_owned()))
        .collect()
}

/// Waits until every channel's marker (in the day of its last entry) reached the last entry.
async fn wait_caught_up(redis: &RedisServer, want: &Expected) -> bool {
    testkit::wait_until(T, || async {
        want.last.iter().all(|(channel, id)| {
            hash(redis, stats_aggregator::day::day_of(*id)).get(&format!("progress:{channel}")) == Some(&id.to_string())
        })
    })
    .await
}

/// Every counted field equals what was published, exactly; nothing else is counted.
fn assert_exact(redis: &RedisServer, want: &Expected) {
    for (day, fields) in &want.days {
        let h = hash(redis, *day);
        let counted: BTreeMap<String, i64> = h
            .iter()
            .filter(|(k, _)| !k.starts_with("progress:") && !k.starts_with("gw") && !k.ends_with("_event_ms"))
            .map(|(k, v)| (k.clone(), v.parse().unwrap()))
            .collect();
        assert_eq!(&counted, fields, "day {day}");
    }
}

fn event_for(i: usize) -> (Channel, EventType, Action, &'static str) {
    let actions = [
        (Action::Created, "created"),
        (Action::Updated, "updated"),
        (Action::Deleted, "deleted"),
    ];
    let (action, name) = actions[i % 3];
    match i % 4 {
        0 => (Channel::ORDERS, EventType::ORDER_RECEIVED, action, name),
        1 => (Channel::INVENTORY, EventType::INVENTORY_CHANGE, action, name),
        2 => (Channel::PRICING, EventType::PRICE_CHANGE, action, name),
        _ => (Channel::LISTINGS, EventType::LISTING_UPDATE, action, name),
    }
}

/// Publishes `n` events over the four channels in batches, paced so that they flow for about
/// `over` (pacing a load, not synchronising), plus one malformed entry every `n / 4` events.
async fn publish(redis: &RedisServer, bus: &RedisBus, n: usize, over: Duration) -> Expected {
    const BATCH: usize = 500;
    let mut want = Expected::default();
    let batches = n.div_ceil(BATCH);
    let pause = over / batches as u32;
    let kinds = ["not_json", "bad_entry", "not_envelope"];
    for b in 0..batches {
        let range = b * BATCH..((b + 1) * BATCH).min(n);
        let events: Vec<(Channel, NewEvent)> = range
            .clone()
            .map(|i| {
                let (c, ty, action, _) = event_for(i);
                (c, NewEvent::new(ty, Payload::new(format!("e{i}"), action)))
            })
            .collect();
        let published = bus.publish_batch(events).await.unwrap();
        for (i, p) in range.clone().zip(published) {
            let (c, ty, _, name) = event_for(i);
            want.event(&c, &ty, name, p.id);
        }
        if (range.start / (n / 4).max(1)) != (range.end / (n / 4).max(1)) {
            let k = want
                .days
                .values()
                .map(|d| d.get("malformed").copied().unwrap_or(0))
                .sum::<i64>() as usize;
            let kind = kinds[k % kinds.len()];
            let key = "rakuda:realtime:stream:{pricing}";
            let id = match kind {
                "not_json" => redis.cli(&["XADD", key, "*", "e", "{broken"]),
                "bad_entry" => redis.cli(&["XADD", key, "*", "x", "y"]),
                _ => redis.cli(&["XADD", key, "*", "e", r#"{"type":"PRICE_CHANGE"}"#]),
            }
            .unwrap();
            want.malformed(&Channel::PRICING, kind, id.trim().parse().unwrap());
        }
        tokio::time::sleep(pause).await;
    }
    want
}

/// A tiny deterministic generator for the kill points (the seed is printed on failure).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_while_100k_events_flow_count_exactly() {
    let redis = RedisServer::start().unwrap();
    let bus = bus(&redis).await;
    // Some events before the first start: a backfill from the start of retention.
    let early = publish(&redis, &bus, 2_000, Duration::ZERO).await;
    let env = env(&redis, "agg-a", &[]);
    let mut agg = Service::start(bin(), &env).unwrap();
    let port = agg.port;
    let seed = Utc::now().timestamp_micros() as u64 | 1;
    let mut rng = Rng(seed);
    let publisher = {
        let bus = bus.clone();
        let redis = &redis;
        async move { publish(redis, &bus, 98_000, Duration::from_secs(8)).await }
    };
    let killer = async {
        let mut kills = 0;
        while kills < 20 {
            // A random point: somewhere in 50..450 ms of work, often mid-batch.
            tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
            agg.kill9();
            kills += 1;
            agg = Service::start_on(bin(), &env, port).unwrap();
        }
        kills
    };
    let (later, kills) = tokio::join!(publisher, killer);
    assert_eq!(kills, 20);
    let mut want = early;
    for (day, fields) in later.days {
        for (k, n) in fields {
            *want.days.entry(day).or_default().entry(k).or_default() += n;
        }
    }
    for (c, id) in later.last {
        want.seen(&c.parse().unwrap(), id);
    }
    let total: i64 = want.days.values().map(|d| d["events"]).sum();
    assert_eq!(total, 100_000);
    assert!(
        wait_caught_up(&redis, &want).await,
        "seed {seed}: not caught up within {T:?}:\n{}",
        agg.log_text()
    );
    assert_exact(&redis, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_at_once_stay_exact() {
    let redis = RedisServer::start().unwrap();
    let bus = bus(&redis).await;
    // Without leases both replicas apply every batch: only the markers keep the totals exact.
    let a = Service::start(bin(), &env(&redis, "agg-a", &[("RAKUDA__LEASES", "false")])).unwrap();
    let b = Service::start(bin(), &env(&redis, "agg-b", &[("RAKUDA__LEASES", "false")])).unwrap();
    let want = publish(&redis, &bus, 20_000, Duration::from_secs(2)).await;
    assert!(
        wait_caught_up(&redis, &want).await,
        "{}\n{}",
        a.log_text(),
        b.log_text()
    );
    assert_exact(&redis, &want);
    drop((a, b));

    // With leases (the default), one replica works a channel; kill -9 the holder and the other
    // takes over when the lease expires, still exact.
    let redis = RedisServer::start().unwrap();
    let bus = self::bus(&redis).await;
    let fast = [("RAKUDA__LEASE_TTL_MS", "600")];
    let mut a = Service::start(bin(), &env(&redis, "agg-a", &fast)).unwrap();
    // a holds every lease before b starts.
    assert!(
        testkit::wait_until(T, || async {
            ["orders", "inventory", "pricing", "listings"].iter().all(|c| {
                redis
                    .cli(&["GET", &format!("rakuda:realtime:stats:lease:{{channel:{c}}}")])
                    .unwrap()
                    .trim()
                    == "agg-a"
            })
        })
        .await
    );
    let b = Service::start(bin(), &env(&redis, "agg-b", &fast)).unwrap();
    let first = publish(&redis, &bus, 10_000, Duration::from_secs(1)).await;
    a.kill9();
    let second = publish(&redis, &bus, 10_000, Duration::from_secs(1)).await;
    let mut want = first;
    for (day, fields) in second.days {
        for (k, n) in fields {
            *want.days.entry(day).or_default().entry(k).or_default() += n;
        }
    }
    for (c, id) in second.last {
        want.seen(&c.parse().unwrap(), id);
    }
    assert!(wait_caught_up(&redis, &want).await, "{}", b.log_text());
    assert_exact(&redis, &want);
    assert_eq!(
        redis
            .cli(&["GET", "rakuda:realtime:stats:lease:{channel:orders}"])
            .unwrap()
            .trim(),
        "agg-b"
    );
}

/// A valid stored body (the envelope without id) of an order stamped at `ts`.
fn body(ts: &str) -> String {
    format!(
        r#"{{"type":"ORDER_RECEIVED","channel":"orders","payload":{{"id":"o","action":"created"}},"timestamp":"{ts}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_either_side_of_midnight_land_in_their_days() {
    let redis = RedisServer::start().unwrap();
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();
    let midnight = stats_aggregator::day::day_start_secs(today) as u64 * 1000;
    let key = "rakuda:realtime:stream:{orders}";
    // Stored before the aggregator ever ran, with the ids Redis would have given them at
    // 23:59:59.999 and 00:00:00.000 (XADD with an explicit id).
    let y_ts = stats_aggregator::day::at(midnight - 1).to_rfc3339();
    for (id, b) in [
        (format!("{}-0", midnight - 1), body(&y_ts)),
        (
            format!("{midnight}-0"),
            body(&stats_aggregator::day::at(midnight).to_rfc3339()),
        ),
        // Accepted after midnight, stamped before it by its publisher: today, and late.
        (format!("{midnight}-1"), body(&y_ts)),
        (format!("{midnight}-2"), "not json".to_owned()),
    ] {
        redis.cli(&["XADD", key, &id, "e", &b]).unwrap();
    }
    let agg = Service::start(bin(), &env(&redis, "agg", &[])).unwrap();
    let done = testkit::wait_until(T, || async {
        hash(&redis, today).get("progress:orders").map(String::as_str) == Some(&format!("{midnight}-2"))
    })
    .await;
    assert!(done, "{}", agg.log_text());
    let y = hash(&redis, yesterday);
    let t = hash(&redis, today);
    assert_eq!(y["events"], "1");
    assert_eq!(y["hour:23"], "1");
    assert_eq!(y["last_event_ms"], (midnight - 1).to_string());
    assert_eq!(y.get("late"), None);
    assert_eq!(t["events"], "2");
    assert_eq!(t["hour:00"], "2");
    assert_eq!(t["late"], "1");
    assert_eq!(t["malformed:not_json"], "1");
    assert_eq!(t["first_event_ms"], midnight.to_string());
    // Each day's hash expires 90 days after the day ends.
    let ttl: i64 = redis
        .cli(&["TTL", &format!("rakuda:realtime:stats:{}", today.format("%Y-%m-%d"))])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let until_end_of_day = 86_400 - (Utc::now().timestamp() - midnight as i64 / 1000);
    assert!((ttl - (until_end_of_day + 90 * 86_400)).abs() < 60, "ttl {ttl}");
}

#[test]
fn a_bad_config_stops_start_up_naming_the_key() {
    testkit::process::assert_bad_config(
        bin(),
        &[("HTTP_ADDR", "127.0.0.1:0")],
        &[
            ("STATS_RETENTION_DAYS", "0", "retention_days"),
            ("RAKUDA__BATCH", "lots", "batch"),
            ("REDIS_URL", "http://127.0.0.1:1", "redis_url"),
        ],
    );
}

#[tokio::test]
async fn report_prints_a_day_and_refuses_bad_dates() {
    let redis = RedisServer::start().unwrap();
    let bus = bus(&redis).await;
    let want = publish(&redis, &bus, 40, Duration::ZERO).await;
    let agg = Service::start(bin(), &env(&redis, "agg", &[])).unwrap();
    assert!(wait_caught_up(&redis, &want).await, "{}", agg.log_text());
    let day = *want.days.keys().next().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .env("REDIS_URL", redis.url())
            .output()
            .unwrap()
    };
    let out = run(&["report", "--date", &day.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events_line = text.lines().find(|l| l.starts_with("events")).unwrap_or_default();
    let expected = want.days[&day]["events"].to_string();
    assert!(
        events_line.split_whitespace().nth(1) == Some(expected.as_str()),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("ORDER_RECEIVED")),
        "{text}"
    );
    let json = run(&["report", "--date", &day.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    testkit::schemas::Schemas::load().assert_valid("stats-range.schema.json", &v);
    let bad = run(&["report", "--date", "2026-02-30"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2026-02-30"));
}

/// A channel spread over partitions (`bus.channels[].partitions`): each partition is read on
/// its own (its own marker, `progress:orders#<k>`), and its events count for the channel
/// (`channel:orders`), exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_channel_counts_as_one_channel() {
    let redis = RedisServer::start().unwrap();
    let file = std::env::temp_dir().join(format!("rakuda-aggregator-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[[bus.channels]]\nname = \"orders\"\ntypes = [\"ORDER_RECEIVED\"]\npartitions = 4\n",
    )
    .unwrap();
    let bus = testkit::bus::redis_bus_with(&redis, |c| {
        c.channels.retain(|c| c.name == Channel::ORDERS);
        c.channels[0].partitions = 4;
    })
    .await;
    let agg = Service::start(bin(), &env(&redis, "agg-p", &[("CONFIG_FILE", file.to_str().unwrap())])).unwrap();
    let config = bus.config().clone();
    let mut want = Expected::default();
    let events: Vec<(Channel, NewEvent)> = (0..2_000)
        .map(|i| {
            let ev = NewEvent::new(
                EventType::ORDER_RECEIVED,
                Payload::new(format!("o{}", i % 50), Action::Created),
            );
            (Channel::ORDERS, ev)
        })
        .collect();
    let entities: Vec<String> = events.iter().map(|(_, e)| e.payload.id.clone()).collect();
    for (chunk, ids) in events.chunks(500).zip(entities.chunks(500)) {
        let published = bus.publish_batch(chunk.to_vec()).await.unwrap();
        for (p, entity) in published.iter().zip(ids) {
            let day = stats_aggregator::day::day_of(p.id);
            let hour = stats_aggregator::day::at(p.id.ms).format("%H").to_string();
            for field in [
                "events".to_owned(),
                "type:ORDER_RECEIVED".into(),
                "channel:orders".into(),
                "action:created".into(),
                format!("hour:{hour}"),
            ] {
                want.add(day, field);
            }
            want.seen(&config.place(&Channel::ORDERS, entity), p.id);
        }
    }
    assert_eq!(
        want.last.len(),
        4,
        "50 entities over 4 partitions: {:?}",
        want.last.keys()
    );
    assert!(wait_caught_up(&redis, &want).await, "{}", agg.log_text());
    assert_exact(&redis, &want);
}
