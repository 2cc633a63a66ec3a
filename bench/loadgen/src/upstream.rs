//! `upstream`: what the live path costs Redis as gateways are added. One redis-server, N
//! gateways (1, 4, 16), each with one SSE subscriber on `orders` (so each follows the
//! channel), and `events` events published at `rate`/s over `POST /api/realtime/publish` to
//! the first gateway. Redis's CPU over the run (utime + stime from /proc, so background
//! work and idle timers count too) divided by the events, the calls per event and the
//! publish script's time per call from `INFO commandstats` (reset before the run), and
//! whether every subscriber got every event once.
//!
//! The baseline, in the same run: the same announcements sent as plain `PUBLISH`es at the same
//! rate to N raw subscriber connections, with no stream and no script. That is what Redis
//! pub/sub itself costs per event on this machine (a wake-up, a read, a reply, and one socket
//! write per subscriber), the floor of any design where each gateway hears each event.
//!
//! And 16 gateways of which only 4 have a subscriber on `orders`: with subscriptions on
//! demand the other 12 never follow it, so Redis should pay what it pays with 4 gateways
//! (`upstream.4_of_16`, its ratio to the 4-gateway figure).

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use testkit::{process::Service, RedisServer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{client::Subscriber, hist::Histogram, now_us};

/// Redis's CPU time so far, in microseconds (all threads).
pub(crate) fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks * 10_000
}

/// `INFO commandstats`: command -> (calls, usec).
pub(crate) fn commandstats(redis: &RedisServer) -> BTreeMap<String, (u64, u64)> {
    let info = redis.cli(&["INFO", "commandstats"]).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line.trim().strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    out
}

/// A keep-alive HTTP/1.1 connection that POSTs JSON and reads each answer whole.
struct Poster {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Poster {
    async fn connect(port: u16) -> std::io::Result<Poster> {
        let sock = TcpStream::connect(("127.0.0.1", port)).await?;
        sock.set_nodelay(true)?;
        Ok(Poster { sock, buf: Vec::new() })
    }

    /// The answer's status.
    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<u16> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.sock.write_all(req.as_bytes()).await?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    self.buf.drain(..end + 4 + len);
                    return Ok(status);
                }
            }
            let n = self.sock.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("the gateway closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `env` for gateways of a scenario on `redis`: many gateways share two cores, so one edge
/// thread each keeps them from crowding it; one publisher from one address publishes past the
/// default per-client publish limit, so that is lifted.
pub(crate) fn gateways_env(env: &HashMap<String, String>, redis: &RedisServer) -> HashMap<String, String> {
    let mut env = env.clone();
    env.insert("REDIS_URL".into(), redis.url());
    env.insert("RAKUDA__EDGE_THREADS".into(), "1".into());
    env.insert("RAKUDA__AUTH__PUBLISH_RATE_PER_SEC".into(), "1000000".into());
    env.insert("RAKUDA__AUTH__PUBLISH_BURST".into(), "1000000".into());
    env
}

/// POSTs `count` JSON bodies to `path` on `port` at `rate`/s over 4 keep-alive connections:
/// request `i` at its scheduled time `at` (Unix µs), its body `body(i, at)`. How many were
/// not answered `ok`.
pub(crate) async fn post_paced(
    port: u16,
    path: &'static str,
    count: usize,
    rate: u64,
    ok: u16,
    body: fn(usize, u64) -> String,
) -> u64 {
    let conns = 4;
    let period = 1_000_000 / rate;
    let t0 = now_us() + 20_000;
    let mut posters = Vec::new();
    for c in 0..conns {
        posters.push(tokio::spawn(async move {
            let mut poster = Poster::connect(port).await.expect("connect");
            let mut refused = 0u64;
            for i in (c..count).step_by(conns) {
                let at = t0 + i as u64 * period;
                let wait = at.saturating_sub(now_us());
                if wait > 0 {
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                }
                if poster.post(path, &body(i, at)).await.expect("POST") != ok {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for p in posters {
        refused += p.await.expect("poster");
    }
    refused
}

/// An announcement as the publish script sends it (the floor publishes the same bytes).
const ANNOUNCEMENT: &str = r#"{"id":"1796306466160-0","prev":"1796306466159-0","type":"ORDER_RECEIVED","channel":"orders","payload":{"id":"1","action":"created","data":{"t":1796306466159}},"timestamp":"2026-12-03T14:01:06.159Z"}"#;

/// One RESP command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// The baseline: `events` plain PUBLISHes at `rate`/s to `subscribers` raw connections; Redis
/// CPU per event, and whether every subscriber got them all.
pub async fn floor(subscribers: usize, events: usize, rate: u64) -> Value {
    let redis = RedisServer::start().expect("redis-server");
    let port = redis.port();
    let channel = "rakuda:realtime:orders";
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).await.expect("subscriber");
        sock.write_all(&resp(&["SUBSCRIBE", channel])).await.expect("subscribe");
        // The confirmation is 3 lines; then each message holds the announcement once.
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut got, mut carry) = (0usize, Vec::new());
            let needle = b"\"prev\"";
            let deadline = Instant::now() + Duration::from_secs(60);
            while got < events && Instant::now() < deadline {
                let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf)).await else {
                    break;
                };
                if n == 0 {
                    break;
                }
                carry.extend_from_slice(&buf[..n]);
                let whole = carry.windows(needle.len()).filter(|w| w == needle).count();
                got += whole;
                // Keep a tail shorter than the needle: a split needle is counted once it is whole.
                let keep = carry.len().min(needle.len() - 1);
                carry.drain(..carry.len() - keep);
            }
            got
        }));
    }
    // Every SUBSCRIBE is confirmed once Redis counts them (bounded wait).
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let n = redis.cli(&["PUBSUB", "NUMSUB", channel]).unwrap_or_default();
        if n.lines().nth(1).and_then(|l| l.trim().parse::<usize>().ok()) == Some(subscribers) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = redis.pid().expect("redis runs");
    let cpu_before = cpu_us(pid);
    let mut publisher = TcpStream::connect(("127.0.0.1", port)).await.expect("publisher");
    publisher.set_nodelay(true).expect("nodelay");
    let command = resp(&["PUBLISH", channel, ANNOUNCEMENT]);
    let period = 1_000_000 / rate;
    let t0 = now_us() + 20_000;
    let mut reply = [0u8; 64];
    for i in 0..events {
        let wait = (t0 + i as u64 * period).saturating_sub(now_us());
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        publisher.write_all(&command).await.expect("publish");
        // `:<n>\r\n`, one per command.
        let _ = publisher.read(&mut reply).await.expect("reply");
    }
    let mut received = 0;
    for r in readers {
        received += r.await.expect("reader");
    }
    let cpu = cpu_us(pid) - cpu_before;
    json!({"scenario": "upstream-floor", "subscribers": subscribers, "events": events, "rate": rate,
           "redis_cpu_us_per_event": (cpu as f64 / events as f64 * 10.0).round() / 10.0,
           "lost": (subscribers * events).saturating_sub(received)})
}

/// One run with `gateways` gateways, the first `followed` of them with a subscriber on
/// `orders` (the others with none: on demand, they do not follow it); a JSON line.
pub async fn run(
    gateway_bin: &Path,
    env: &HashMap<String, String>,
    gateways: usize,
    followed: usize,
    events: usize,
    rate: u64,
) -> Value {
    let redis = RedisServer::start().expect("redis-server");
    let env = gateways_env(env, &redis);
    let services: Vec<Service> = (0..gateways)
        .map(|_| Service::start(gateway_bin, &env).expect("gateway"))
        .collect();
    let hist = Arc::new(Histogram::new());
    let mut subs = Vec::with_capacity(followed);
    for s in services.iter().take(followed) {
        let path = "/api/realtime/events?channels=orders";
        subs.push(
            Subscriber::connect(s.port, path, events, hist.clone())
                .await
                .expect("subscribe"),
        );
    }
    // The subscriptions reach Redis after the response head: give them a moment (bounded;
    // a late one would replay from the stream and still count every event).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = redis.pid().expect("redis runs");
    redis.cli(&["CONFIG", "RESETSTAT"]).expect("resetstat");
    let cpu_before = cpu_us(pid);
    let start = Instant::now();

    let rejected = post_paced(services[0].port, "/api/realtime/publish", events, rate, 200, |i, at| {
        format!(
            r#"{{"channel":"orders","type":"ORDER_RECEIVED","payload":{{"id":"{i}","action":"created","data":{{"t":{at}}}}}}}"#
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = 0;
    let mut duplicates = 0;
    for s in subs {
        let r = s.finish(deadline.saturating_duration_since(Instant::now())).await;
        received += r.unique;
        duplicates += r.received - r.unique;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_us(pid) - cpu_before;
    let stats = commandstats(&redis);
    let per_event = |v: u64| (v as f64 / events as f64 * 100.0).round() / 100.0;
    let calls: serde_json::Map<String, Value> = stats
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "config" | "info"))
        .map(|(name, (calls, usec))| {
            (
                name.clone(),
                json!({"per_event": per_event(*calls), "us_per_call": (*usec as f64 / (*calls).max(1) as f64 * 10.0).round() / 10.0}),
            )
        })
        .collect();
    let script = stats
        .get("evalsha")
        .or_else(|| stats.get("fcall"))
        .map(|(calls, usec)| *usec as f64 / (*calls).max(1) as f64)
        .unwrap_or(f64::NAN);
    drop(services);
    json!({"scenario": "upstream", "gateways": gateways, "followed_on": followed, "events": events, "rate": rate,
           "seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
           "redis_cpu_us_per_event": (cpu as f64 / events as f64 * 10.0).round() / 10.0,
           "publish_script_us_per_call": (script * 10.0).round() / 10.0,
           "commands": calls, "rejected": rejected,
           "lost": (followed * events) as u64 - received, "duplicates": duplicates})
}

/// The publish script (`crates/event-bus/src/redis/publish.lua`) as the gateway calls it for
/// one event with no idempotency key.
const PUBLISH_LUA: &str = include_str!("../../../crates/event-bus/src/redis/publish.lua");

/// The publish script's own cost when Redis is busy with it: `calls` calls of one event each,
/// pipelined 64 at a time on one connection (unbatched: one event per call), the time per
/// call from `INFO commandstats`. At 1,000 events a second each call finds Redis asleep and
/// its caches cold, and every command costs several times as much (plain `PUBLISH` too).
pub async fn script_warm(calls: usize) -> Value {
    let redis = RedisServer::start().expect("redis-server");
    let sha = redis.cli(&["SCRIPT", "LOAD", PUBLISH_LUA]).expect("load the script");
    let sha = sha.trim();
    let mut sock = TcpStream::connect(("127.0.0.1", redis.port())).await.expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let body = &ANNOUNCEMENT[ANNOUNCEMENT.find(",\"type\"").expect("type")..];
    let body = format!("{{{}", &body[1..]);
    let command = resp(&[
        "EVALSHA",
        sha,
        "1",
        "rakuda:realtime:stream:{orders}",
        "rakuda:realtime:live:{orders}",
        "",
        "100000",
        "0",
        "86400",
        "0",
        "0",
        &body,
    ]);
    redis.cli(&["CONFIG", "RESETSTAT"]).expect("resetstat");
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < calls {
        let n = 64.min(calls - done);
        sock.write_all(&command.repeat(n)).await.expect("send");
        // Each reply is a flat array of 2 (`*2`), read until all of this batch's are in.
        let (mut got, mut carry) = (0, Vec::new());
        while got < n {
            let r = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
                .await
                .expect("replies in time")
                .expect("read");
            assert!(r > 0, "redis closed the connection");
            carry.extend_from_slice(&buf[..r]);
            got = carry.windows(4).filter(|w| w == b"*2\r\n").count();
        }
        done += n;
    }
    let stats = commandstats(&redis);
    let (c, usec) = stats.get("evalsha").copied().unwrap_or((0, 0));
    json!({"scenario": "upstream-script-warm", "calls": c,
           "publish_script_us_per_call": (usec as f64 / c.max(1) as f64 * 10.0).round() / 10.0})
}

/// `runs` runs with 1, 4 and 16 gateways, each line printed; then the medians and the ratio
/// of each figure to the one-gateway figure, on stderr; the summary as JSON.
pub async fn suite(gateway_bin: &Path, env: &HashMap<String, String>, runs: usize, events: usize) -> Value {
    let counts = [1usize, 4, 16];
    let mut cpu: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut base: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut script: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        for &n in &counts {
            let mut line = self::run(gateway_bin, env, n, n, events, 1_000).await;
            line["run"] = json!(run);
            println!("{line}");
            cpu.entry(n)
                .or_default()
                .push(line["redis_cpu_us_per_event"].as_f64().unwrap_or(f64::NAN));
            script
                .entry(n)
                .or_default()
                .push(line["publish_script_us_per_call"].as_f64().unwrap_or(f64::NAN));
            let mut line = floor(n, events, 1_000).await;
            line["run"] = json!(run);
            println!("{line}");
            base.entry(n)
                .or_default()
                .push(line["redis_cpu_us_per_event"].as_f64().unwrap_or(f64::NAN));
        }
    }
    // A channel followed on 4 of 16 gateways: on demand, the other 12 never subscribe to it.
    let mut partial = Vec::new();
    for run in 0..runs {
        let mut line = self::run(gateway_bin, env, 16, 4, events, 1_000).await;
        line["run"] = json!(run);
        println!("{line}");
        partial.push(line["redis_cpu_us_per_event"].as_f64().unwrap_or(f64::NAN));
    }
    let median = |v: &[f64]| crate::median(v.to_vec());
    let (one, one_floor) = (median(&cpu[&1]), median(&base[&1]));
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let mut summary = serde_json::Map::new();
    for &n in &counts {
        let (c, f, s) = (median(&cpu[&n]), median(&base[&n]), median(&script[&n]));
        let (ratio, floor_ratio, vs_floor) = (round(c / one), round(f / one_floor), round(c / f));
        eprintln!(
            "  upstream {n:>2} gateways: Redis CPU {c:>6.1} us/event ({ratio}x one gateway's; {vs_floor}x plain PUBLISH to {n}, \
             which is {f:.1} us, {floor_ratio}x its one-subscriber figure), publish script {s:.1} us/call"
        );
        summary.insert(
            format!("upstream.{n}"),
            json!({"redis_cpu_us_per_event": c, "vs_one_gateway": ratio, "floor_us_per_event": f,
                   "floor_vs_one_subscriber": floor_ratio, "vs_floor": vs_floor, "publish_script_us_per_call": s}),
        );
    }
    let (p, four) = (median(&partial), median(&cpu[&4]));
    eprintln!(
        "  upstream followed on 4 of 16 gateways: Redis CPU {p:.1} us/event, {}x the figure with 4 gateways ({four:.1})",
        round(p / four)
    );
    summary.insert(
        "upstream.4_of_16".into(),
        json!({"redis_cpu_us_per_event": p, "vs_4_gateways": round(p / four)}),
    );
    let mut warm = Vec::new();
    for run in 0..runs {
        let mut line = script_warm(20_000).await;
        line["run"] = json!(run);
        println!("{line}");
        warm.push(line["publish_script_us_per_call"].as_f64().unwrap_or(f64::NAN));
    }
    let w = median(&warm);
    eprintln!("  upstream publish script with Redis busy with it (one event per call, pipelined): {w:.1} us/call");
    summary.insert("upstream.script_warm".into(), json!({"publish_script_us_per_call": w}));
    Value::Object(summary)
}
