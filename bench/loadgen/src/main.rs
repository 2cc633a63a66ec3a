//! `rakuda-loadgen suite`: the gateway benchmark of `make bench`.
//!
//! Starts a redis-server, two `sse-gateway`s (grouping off, so every event is a delivery; one
//! for SSE clients, one for WebSocket clients, so each has its own memory figures) and the
//! floor (`bench-floor`, a trivial SSE fan-out server) on loopback, then runs each scenario
//! against all three, `--runs` times (default 3), and prints one JSON line per scenario and
//! target, then the medians and the ratios gateway/floor, gateway-ws/floor and
//! gateway-ws/gateway:
//!
//! - idle: RSS per connection with 10k connections open;
//! - fanout: 1k subscribers, 1k msg/s for 2 s: deliveries/s, latency p50/p99, lost;
//! - wide: 10k subscribers, 50 msg/s for 4 s: the same;
//! - burst: 1k subscribers, 10k messages as fast as possible: deliveries/s, p99, lost;
//! - stalled: 100 clients that never read beside 200 healthy ones (500 msg/s for 4 s): the
//!   healthy clients' p99 against the same load without the stalled ones, and memory growth;
//! - upstream: Redis's CPU per event and calls per event with 1, 4 and 16 gateways, 5,000
//!   events at 1,000/s published over HTTP (see `upstream.rs`);
//! - notifications: Redis's CPU per notification to one user with 1 and 16 gateways, 3,000
//!   at 500/s (see `private.rs`);
//! - churn: 10,000 streams of 1,000 users opened and closed over 60 s; the gateway's RSS and
//!   Redis's shard channels before and after (see `churn.rs`);
//! - reshard: `redis-cli --cluster reshard` moves a third of the slots while 1,000 clients
//!   follow `orders` (8 partitions) and 10,000 events flow at 500/s (see `reshard.rs`);
//! - presence: Redis's CPU for 10,000 joins in a burst and per second while they are held,
//!   presence on against off, and the fanout load with presence on against off side by side
//!   (see `presence.rs`);
//! - publish: events accepted per second and the gateway's CPU per event, published over HTTP
//!   on 4 connections, one per request against 100 per request (see `publish.rs`);
//! - spread: each master's share of the Redis CPU on a Cluster of 3 and of 6 masters, with
//!   1,000 users' notifications and 4 channels of 8 partitions (see `spread.rs`).
//!
//! Subscribers speak raw HTTP/1.1 (chunked or not) to keep the client cheaper than the
//! servers; like EventSource, a subscriber whose stream ends early reconnects with
//! Last-Event-ID (the gateway cuts a client that lags its queue; it then resumes from Redis),
//! and the reconnects are reported. Events are published through event-bus (on a thread of
//! its own, `publisher.rs`), which stores them (the gateway reads the
//! stream) and announces them on pub/sub (the floor listens there): one publisher for both.
//! Latency counts from each message's scheduled send time to its arrival, on one clock.

mod churn;
mod client;
mod hist;
mod presence;
mod private;
mod publish;
mod publisher;
mod reshard;
mod spread;
mod upstream;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use testkit::{process::Service, RedisServer};

use client::Subscriber;
use hist::Histogram;
use publisher::Publisher;

struct Target {
    name: &'static str,
    service: Service,
    /// The SSE path, or the WebSocket query for `ws`.
    path: &'static str,
    ws: bool,
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.parent().expect("target dir").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with cargo build --release",
        path.display()
    );
    path
}

/// The resident memory of a running service, from /proc/<pid>/status.
fn rss_kib(service: &Service) -> u64 {
    let pid = service.pid().expect("the service runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

async fn connect_all(target: &Target, n: usize, expected: usize, hist: &Arc<Histogram>) -> Vec<Subscriber> {
    let (port, path, ws) = (target.service.port, target.path, target.ws);
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let sem = sem.clone();
        let hist = hist.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore");
            if ws {
                Subscriber::connect_ws(port, &path, expected, hist).await
            } else {
                Subscriber::connect(port, &path, expected, hist).await
            }
        }));
    }
    let mut subs = Vec::with_capacity(n);
    for t in tasks {
        subs.push(t.await.expect("join").expect("connect"));
    }
    subs
}

async fn idle(target: &Target, n: usize) -> Value {
    let before = rss_kib(&target.service);
    let hist = Arc::new(Histogram::new());
    let subs = connect_all(target, n, 0, &hist).await;
    // Let allocations settle: the server has answered every connection already.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(&target.service);
    drop(subs);
    json!({"scenario": "idle", "target": target.name, "connections": n,
           "rss_before_kib": before, "rss_after_kib": after,
           "kib_per_connection": (after.saturating_sub(before)) as f64 / n as f64})
}

/// `rate` None: as fast as possible (pipelined batches).
async fn stream(
    target: &Target,
    bus: &Publisher,
    scenario: &str,
    subscribers: usize,
    messages: usize,
    rate: Option<u64>,
) -> Value {
    let hist = Arc::new(Histogram::new());
    let subs = connect_all(target, subscribers, messages, &hist).await;
    let start = Instant::now();
    let t0 = now_us() + 20_000;
    bus.publish(messages, rate, t0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut results = Vec::with_capacity(subs.len());
    for s in subs {
        let left = deadline.saturating_duration_since(Instant::now());
        results.push(s.finish(left).await);
    }
    let elapsed_to_last = results
        .iter()
        .filter_map(|r| r.last_at)
        .max()
        .map(|t| t.duration_since(start))
        .unwrap_or_default();
    let received: u64 = results.iter().map(|r| r.unique).sum();
    let duplicates: u64 = results.iter().map(|r| r.received - r.unique).sum();
    let reconnects: u64 = results.iter().map(|r| r.reconnects).sum();
    let lost = (subscribers * messages) as u64 - received;
    json!({"scenario": scenario, "target": target.name, "subscribers": subscribers, "messages": messages,
           "offered_per_s": rate.map(|r| r * subscribers as u64),
           "deliveries_per_s": (received as f64 / elapsed_to_last.as_secs_f64()).round(),
           "p50_ms": hist.quantile_ms(0.5), "p99_ms": hist.quantile_ms(0.99), "max_ms": hist.quantile_ms(1.0),
           "lost": lost, "duplicates": duplicates, "reconnects": reconnects})
}

/// 100 clients that connect and never read, beside healthy ones: the healthy clients' p99
/// with and without them (same load, same run), and the server's memory growth meanwhile.
async fn stalled(
    target: &Target,
    bus: &Publisher,
    healthy: usize,
    stalled: usize,
    messages: usize,
    rate: u64,
) -> Value {
    let without = stream(target, bus, "stalled-baseline", healthy, messages, Some(rate)).await;
    let before = rss_kib(&target.service);
    let mut silent = Vec::with_capacity(stalled);
    let mut silent_ws = Vec::with_capacity(stalled);
    for _ in 0..stalled {
        if target.ws {
            // The handshake, then never a read.
            let url = format!("ws://127.0.0.1:{}/api/realtime/ws?{}", target.service.port, target.path);
            silent_ws.push(tokio_tungstenite::connect_async(url).await.expect("connect").0);
            continue;
        }
        // Send the request, then never read: the server's writes back up into its queues.
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", target.service.port))
            .await
            .expect("connect");
        let req = format!("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target.path);
        tokio::io::AsyncWriteExt::write_all(&mut sock, req.as_bytes())
            .await
            .expect("request");
        silent.push(sock);
    }
    let with = stream(target, bus, "stalled", healthy, messages, Some(rate)).await;
    let after = rss_kib(&target.service);
    drop(silent);
    drop(silent_ws);
    let p99 = |v: &Value| v["p99_ms"].as_f64().unwrap_or(f64::NAN);
    json!({"scenario": "stalled", "target": target.name, "healthy": healthy, "stalled": stalled,
           "messages": messages, "rate": rate,
           "healthy_p99_ms": p99(&with), "healthy_p99_ms_without_stalled": p99(&without),
           "p99_ratio_vs_without": p99(&with) / p99(&without),
           "lost": with["lost"], "duplicates": with["duplicates"],
           "rss_growth_kib": after as i64 - before as i64})
}

/// The scenarios `--only` may name: the first [`TARGETED`] run against the suite's targets,
/// the others start their own processes.
const SCENARIOS: [&str; 12] = [
    "idle",
    "fanout",
    "wide",
    "burst",
    "stalled",
    "upstream",
    "notifications",
    "churn",
    "reshard",
    "spread",
    "presence",
    "publish",
];
/// How many of [`SCENARIOS`] run against the suite's targets.
const TARGETED: usize = 5;

/// `suite`'s arguments: runs (3), scale (1.0; 0.1 runs every scenario with a tenth of the
/// clients and messages, a smoke test), and the scenarios to run (all); an unknown argument
/// or a bad value is an error naming it, not ignored.
fn parse_args(args: &[String]) -> Result<(usize, f64, Option<Vec<String>>), String> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("suite") {
        return Err("the first argument must be `suite`".into());
    }
    let (mut runs, mut scale, mut only) = (3, 1.0, None);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => {
                let v = value()?;
                runs = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--runs {v}: not a count of runs"))?;
            }
            "--scale" => {
                let v = value()?;
                scale = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or_else(|| format!("--scale {v}: not a positive number"))?;
            }
            "--only" => {
                let v = value()?;
                let names: Vec<String> = v.split(',').map(str::to_owned).collect();
                if let Some(bad) = names.iter().find(|n| !SCENARIOS.contains(&n.as_str())) {
                    return Err(format!("--only: no scenario {bad:?}"));
                }
                only = Some(names);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((runs, scale, only))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (runs, scale, only) = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rakuda-loadgen: {e}\nusage: rakuda-loadgen suite [--runs N] [--scale F] [--only SCENARIO[,SCENARIO...]]   (make bench)\nscenarios: {}", SCENARIOS.join(", "));
            std::process::exit(2);
        }
    };
    let on = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == name));
    let n = |x: usize| ((x as f64 * scale) as usize).max(1);

    let redis = RedisServer::start().expect("redis-server");
    let env: HashMap<String, String> = [
        ("REDIS_URL", redis.url()),
        ("SSE_DEBOUNCE_WINDOW", "0".to_owned()),
        ("RAKUDA__MAX_CONNECTIONS_PER_CLIENT", "1000000".to_owned()),
        ("RAKUDA__MAX_CONNECTIONS", "1000000".to_owned()),
        // Every client comes from 127.0.0.1 (AUTH_MODE=none counts them by IP): the per-client
        // limits would count them all as one.
        ("RAKUDA__RESUME_BURST", "1000000".to_owned()),
        ("RAKUDA__MAX_PENDING_CONNECTIONS", "1000000".to_owned()),
        // The shipped connection queue: a subscriber whose queue fills in the burst reads what
        // it missed from Redis in place (not cut, not reconnecting; issue 34).
        ("RUST_LOG", "warn".to_owned()),
        ("AUTH_MODE", "none".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Fresh processes for every run: idle RSS is only meaningful before a process has been
    // through load (its allocator keeps what earlier scenarios freed).
    let start_targets = || {
        [
            Target {
                name: "gateway",
                service: Service::start(&bin("sse-gateway"), &env).expect("gateway"),
                path: "/api/realtime/events?channels=orders",
                ws: false,
            },
            Target {
                name: "gateway-ws",
                service: Service::start(&bin("sse-gateway"), &env).expect("gateway"),
                path: "channels=orders",
                ws: true,
            },
            Target {
                name: "floor",
                service: Service::start(&bin("bench-floor"), &env).expect("floor"),
                path: "/",
                ws: false,
            },
        ]
    };
    let bus = Publisher::start(redis.url());

    let mut figures: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    // No target processes to start when only the upstream scenario (its own gateways) runs.
    let upstream_only = only
        .as_ref()
        .is_some_and(|o| o.iter().all(|s| SCENARIOS[TARGETED..].contains(&s.as_str())));
    for run in (0..runs).filter(|_| !upstream_only) {
        let targets = start_targets();
        for t in &targets {
            let mut lines = Vec::new();
            if on("idle") {
                lines.push(idle(t, n(10_000)).await);
            }
            if on("fanout") {
                lines.push(stream(t, &bus, "fanout", n(1_000), n(2_000), Some(1_000)).await);
            }
            if on("wide") {
                lines.push(stream(t, &bus, "wide", n(10_000), n(200), Some(50)).await);
            }
            if on("burst") {
                lines.push(stream(t, &bus, "burst", n(1_000), n(10_000), None).await);
            }
            if on("stalled") {
                lines.push(stalled(t, &bus, n(200), 100, n(2_000), 500).await);
            }
            for mut line in lines {
                line["run"] = json!(run);
                println!("{line}");
                let scenario = line["scenario"].as_str().unwrap_or_default().to_owned();
                for key in [
                    "kib_per_connection",
                    "deliveries_per_s",
                    "p50_ms",
                    "p99_ms",
                    "lost",
                    "duplicates",
                    "reconnects",
                    "healthy_p99_ms",
                    "p99_ratio_vs_without",
                    "rss_growth_kib",
                ] {
                    if let Some(v) = line[key].as_f64() {
                        figures
                            .entry((scenario.clone(), key.to_owned(), t.name.to_owned()))
                            .or_default()
                            .push(v);
                    }
                }
            }
        }
    }
    eprintln!(
        "\nmedians of {runs} runs (gateway = SSE, gateway-ws = WebSocket, floor = trivial SSE server; side by side in this invocation):"
    );
    let mut summary = serde_json::Map::new();
    let keys: Vec<(String, String)> = figures
        .keys()
        .map(|(s, k, _)| (s.clone(), k.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for (scenario, key) in keys {
        let get = |t: &str| {
            figures
                .get(&(scenario.clone(), key.clone(), t.to_owned()))
                .cloned()
                .map(median)
        };
        let (g, w, f) = (get("gateway"), get("gateway-ws"), get("floor"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
            _ => None,
        };
        let show = |r: Option<f64>| r.map(|r| r.to_string()).unwrap_or("-".into());
        eprintln!(
            "  {scenario:<7} {key:<20} gateway {:>10} ws {:>10} floor {:>10}  gateway/floor {} ws/floor {} ws/gateway {}",
            fmt(g),
            fmt(w),
            fmt(f),
            show(ratio(g, f)),
            show(ratio(w, f)),
            show(ratio(w, g)),
        );
        summary.insert(
            format!("{scenario}.{key}"),
            json!({"gateway": g, "gateway_ws": w, "floor": f, "ratio": ratio(g, f),
                   "ws_ratio": ratio(w, f), "ws_vs_sse": ratio(w, g)}),
        );
    }
    if on("upstream") {
        eprintln!("\nRedis per event as gateways are added (medians of {runs} runs):");
        let figures = upstream::suite(&bin("sse-gateway"), &env, runs, n(5_000)).await;
        summary.extend(figures.as_object().cloned().unwrap_or_default());
    }
    if on("notifications") {
        eprintln!("\nRedis per notification to one user as gateways are added (medians of {runs} runs):");
        let figures = private::suite(&bin("sse-gateway"), &env, runs, n(3_000)).await;
        summary.extend(figures.as_object().cloned().unwrap_or_default());
    }
    if on("churn") {
        eprintln!("\nStreams that come and go (one run):");
        let line = churn::run(&bin("sse-gateway"), &env, n(10_000), 1_000, Duration::from_secs(60)).await;
        println!("{line}");
        eprintln!(
            "  churn: {} streams of 1,000 users over 60 s: shard channels {} before, {} at the peak, {} after; RSS {} KiB before, {} after",
            line["connections"], line["shard_channels_before"], line["shard_channels_peak"],
            line["shard_channels_after"], line["rss_kib_before"], line["rss_kib_after"]
        );
        summary.insert("churn".into(), line);
    }
    if on("reshard") {
        eprintln!("\nA third of the slots moved under load (one run):");
        let line = reshard::run(&bin("sse-gateway"), &env, n(1_000), n(10_000), 500).await;
        println!("{line}");
        eprintln!(
            "  reshard: 5,461 slots ({} of the 8 partitions of orders) moved in {} s while {} clients followed {} events: {} lost, {} duplicated, {} reconnects, {} publishes retried",
            line["partitions_moved"], line["reshard_seconds"], line["clients"], line["events"], line["lost"], line["duplicates"],
            line["reconnects"], line["publishes_retried"]
        );
        summary.insert("reshard".into(), line);
    }
    if on("presence") {
        eprintln!("\nWhat presence costs (medians of {runs} runs):");
        let figures = presence::suite(&bin("sse-gateway"), &env, &bus, runs, n(10_000), n(1_000)).await;
        summary.extend(figures.as_object().cloned().unwrap_or_default());
    }
    if on("publish") {
        eprintln!("\nPublishing over HTTP (medians of {runs} runs):");
        let figures = publish::suite(&bin("sse-gateway"), &env, runs, n(10_000)).await;
        summary.extend(figures.as_object().cloned().unwrap_or_default());
    }
    if on("spread") {
        eprintln!("\nThe load over a Redis Cluster's masters (medians of {runs} runs):");
        let figures = spread::suite(runs, n(12_000)).await;
        summary.extend(figures.as_object().cloned().unwrap_or_default());
    }
    println!(
        "{}",
        json!({"bench": "gateway", "summary": "median", "runs": runs, "scale": scale, "figures": summary})
    );
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
        None => "-".into(),
    }
}
