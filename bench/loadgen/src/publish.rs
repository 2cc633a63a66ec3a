//! `publish`: the HTTP publish path (`docs/reference.md`, "Publishing"), one event per request
//! against several per request (the fast path for producers with bursts).
//!
//! One gateway on its own redis-server (`AUTH_MODE=none`, publish limits lifted), one SSE
//! subscriber following `orders`; `events` events POSTed to `/api/realtime/publish` over 4
//! keep-alive connections as fast as they are answered, once one per request and once 100 per
//! request. For each: events accepted per second, and the gateway's CPU (utime + stime from
//! /proc) per event, both from the first request sent to the last event the subscriber got.

use std::{collections::HashMap, path::Path, time::Instant};

use serde_json::{json, Value};
use testkit::{process::Service, RedisServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{client::Subscriber, hist::Histogram, median};

/// Concurrent publishing connections.
const CONNS: usize = 4;
/// Events per request on the batched path.
const BATCH: usize = 100;

/// The process's CPU so far, in µs (clock ticks of 10 ms).
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) * 10_000.0
}

fn body(first: usize, n: usize) -> String {
    let event = |i: usize| {
        format!(
            r#"{{"channel":"orders","type":"ORDER_RECEIVED","payload":{{"id":"{i}","action":"created","data":{{"seq":{i}}}}}}}"#
        )
    };
    if n == 1 {
        event(first)
    } else {
        format!("[{}]", (first..first + n).map(event).collect::<Vec<_>>().join(","))
    }
}

/// Sends `requests` (first event, events) one after another on one keep-alive connection;
/// panics on an answer other than 200.
async fn send(addr: String, requests: Vec<(usize, usize)>) {
    let sock = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    for (first, n) in requests {
        let b = body(first, n);
        let req = format!(
            "POST /api/realtime/publish HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
            b.len()
        );
        w.write_all(req.as_bytes()).await.expect("request");
        let mut len = 0;
        line.clear();
        r.read_line(&mut line).await.expect("status");
        assert!(line.starts_with("HTTP/1.1 200"), "publish answered {line:?}");
        loop {
            line.clear();
            r.read_line(&mut line).await.expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("content-length");
            }
        }
        let mut answer = vec![0; len];
        r.read_exact(&mut answer).await.expect("answer");
    }
}

/// One run: `events` events, `per` per request; (events/s, gateway CPU µs per event).
async fn run(gateway_bin: &Path, env: &HashMap<String, String>, events: usize, per: usize) -> (f64, f64) {
    let redis = RedisServer::start().expect("redis-server");
    let mut env = env.clone();
    env.insert("REDIS_URL".into(), redis.url());
    env.insert("RAKUDA__AUTH__PUBLISH_RATE_PER_SEC".into(), "1000000000".into());
    env.insert("RAKUDA__AUTH__PUBLISH_BURST".into(), "1000000000".into());
    let gw = Service::start(gateway_bin, &env).expect("gateway");
    let addr = gw.base().trim_start_matches("http://").to_owned();
    let pid = gw.pid().expect("the gateway runs");
    let port: u16 = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("a port");
    let hist = std::sync::Arc::new(Histogram::new());
    let subscriber = Subscriber::connect(port, "/api/realtime/events?channels=orders", events, hist)
        .await
        .expect("subscribe");
    let requests: Vec<(usize, usize)> = (0..events).step_by(per).map(|i| (i, per.min(events - i))).collect();
    let mut lanes = vec![Vec::new(); CONNS];
    for (i, r) in requests.into_iter().enumerate() {
        lanes[i % CONNS].push(r);
    }
    let (cpu0, t0) = (cpu_us(pid), Instant::now());
    futures::future::join_all(lanes.into_iter().map(|l| send(addr.clone(), l))).await;
    let got = subscriber.finish(std::time::Duration::from_secs(60)).await;
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_us(pid) - cpu0);
    assert_eq!(got.unique as usize, events, "the subscriber gets every event");
    (events as f64 / secs, cpu / events as f64)
}

/// The scenario, `runs` times: medians of the single and the batched path.
pub async fn suite(gateway_bin: &Path, env: &HashMap<String, String>, runs: usize, events: usize) -> Value {
    let (mut single, mut batched) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        single.push(run(gateway_bin, env, events, 1).await);
        batched.push(run(gateway_bin, env, events * 10, BATCH).await);
    }
    let m = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    let line = json!({
        "scenario": "publish", "connections": CONNS,
        "single_events_per_s": m(&single, |x| x.0), "single_cpu_us_per_event": m(&single, |x| x.1),
        "batched_events_per_s": m(&batched, |x| x.0), "batched_cpu_us_per_event": m(&batched, |x| x.1),
        "events_per_request_batched": BATCH,
    });
    println!("{line}");
    eprintln!(
        "  publish over {CONNS} connections: one event per request {:.0} events/s, {:.1} µs of gateway CPU each; {BATCH} per request {:.0} events/s, {:.1} µs each",
        line["single_events_per_s"].as_f64().unwrap_or(0.0),
        line["single_cpu_us_per_event"].as_f64().unwrap_or(0.0),
        line["batched_events_per_s"].as_f64().unwrap_or(0.0),
        line["batched_cpu_us_per_event"].as_f64().unwrap_or(0.0),
    );
    json!({"publish": line})
}
