//! `presence`: what presence costs (`docs/reference.md`, "Presence").
//!
//! - Joins: one gateway on its own redis-server (`AUTH_MODE=jwt`, 1,000 users), `joins` streams
//!   opened in a burst and held; Redis's CPU (from /proc) from before the burst until 3 s after
//!   it (the announcements that follow it included), and per second while they are held
//!   (`INFO cpu`), with the script calls (`INFO commandstats`). Once
//!   with presence on (1 s interval), once off; the difference divided by the joins is what one
//!   join costs Redis, and the held difference what the announcements cost per second.
//! - Fan-out: the `fanout` load (1,000 subscribers, 1,000 msg/s for 2 s) against two gateways
//!   side by side on the suite's Redis, one announcing presence and one not.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use serde_json::{json, Value};
use testkit::{process::Service, RedisServer};

use crate::{
    churn::{token, SECRET},
    client::Subscriber,
    hist::Histogram,
    publisher::Publisher,
    upstream::commandstats,
    Target,
};

/// Redis's CPU so far, in ms (`INFO cpu`: microseconds, where /proc counts 10 ms ticks).
fn cpu_ms(redis: &RedisServer) -> f64 {
    let info = redis.cli(&["INFO", "cpu"]).unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix(':')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field("used_cpu_sys") + field("used_cpu_user")) * 1000.0
}

/// Script calls so far (the announcements).
fn script_calls(redis: &RedisServer) -> u64 {
    commandstats(redis).get("evalsha").map_or(0, |(calls, _)| *calls)
}

/// Redis's CPU in ms during a burst of `joins` streams (until 3 s after it) and per second
/// while they are held, and the script calls of each; presence every `interval_ms` (0: off).
async fn joins_cost(
    gateway_bin: &Path,
    env: &HashMap<String, String>,
    interval_ms: u64,
    joins: usize,
    users: usize,
) -> (f64, f64, u64, f64) {
    let redis = RedisServer::start().expect("redis-server");
    let mut env = env.clone();
    env.insert("REDIS_URL".into(), redis.url());
    env.insert("AUTH_MODE".into(), "jwt".into());
    env.insert("JWT_HS256_SECRET".into(), SECRET.into());
    env.insert("RAKUDA__PRESENCE_INTERVAL_MS".into(), interval_ms.to_string());
    let gw = Service::start(gateway_bin, &env).expect("gateway");
    let paths: Vec<String> = (0..users)
        .map(|u| {
            format!(
                "/api/realtime/events?channels=orders&notifications=false&access_token={}",
                token(&format!("user-{u}"))
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hist = Arc::new(Histogram::new());
    let (before, calls_before) = (cpu_ms(&redis), script_calls(&redis));
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(joins);
    for i in 0..joins {
        let (sem, hist, path, port) = (sem.clone(), hist.clone(), paths[i % users].clone(), gw.port);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore");
            Subscriber::connect(port, &path, 0, hist).await
        }));
    }
    let mut subs = Vec::with_capacity(joins);
    for t in tasks {
        subs.push(t.await.expect("join").expect("connect"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (burst, burst_calls) = (cpu_ms(&redis) - before, script_calls(&redis) - calls_before);
    let (held_from, held_calls) = (cpu_ms(&redis), script_calls(&redis));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = (cpu_ms(&redis) - held_from) / 5.0;
    let held_calls = (script_calls(&redis) - held_calls) as f64 / 5.0;
    drop(subs);
    (burst, held, burst_calls, held_calls)
}

/// The medians of `runs` runs; prints each run's line.
pub async fn suite(
    gateway_bin: &Path,
    env: &HashMap<String, String>,
    bus: &Publisher,
    runs: usize,
    joins: usize,
    subscribers: usize,
) -> Value {
    let mut rows: Vec<Value> = Vec::new();
    for run in 0..runs {
        let (on_burst, on_held, on_calls, on_held_calls) = joins_cost(gateway_bin, env, 1_000, joins, 1_000).await;
        let (off_burst, off_held, _, _) = joins_cost(gateway_bin, env, 0, joins, 1_000).await;
        let with = |interval: &str| {
            let mut e = env.clone();
            e.insert("RAKUDA__PRESENCE_INTERVAL_MS".into(), interval.into());
            e
        };
        let on = Target {
            name: "presence-on",
            service: Service::start(gateway_bin, &with("1000")).expect("gateway"),
            path: "/api/realtime/events?channels=orders",
            ws: false,
        };
        let off = Target {
            name: "presence-off",
            service: Service::start(gateway_bin, &with("0")).expect("gateway"),
            path: "/api/realtime/events?channels=orders",
            ws: false,
        };
        // In turn, the order alternating by run: neither always runs on a warmer machine.
        let (f_on, f_off) = if run % 2 == 0 {
            let a = crate::stream(&on, bus, "fanout", subscribers, 2_000, Some(1_000)).await;
            (
                a,
                crate::stream(&off, bus, "fanout", subscribers, 2_000, Some(1_000)).await,
            )
        } else {
            let b = crate::stream(&off, bus, "fanout", subscribers, 2_000, Some(1_000)).await;
            (
                crate::stream(&on, bus, "fanout", subscribers, 2_000, Some(1_000)).await,
                b,
            )
        };
        let line = json!({"scenario": "presence", "run": run, "joins": joins, "users": 1_000,
            "redis_cpu_ms_burst_on": on_burst, "redis_cpu_ms_burst_off": off_burst,
            "redis_cpu_us_per_join": ((on_burst - off_burst) * 1000.0 / joins as f64 * 100.0).round() / 100.0,
            "redis_cpu_ms_per_s_held_on": on_held, "redis_cpu_ms_per_s_held_off": off_held,
            "script_calls_burst": on_calls, "script_calls_per_s_held": on_held_calls,
            "fanout_deliveries_per_s_on": f_on["deliveries_per_s"], "fanout_deliveries_per_s_off": f_off["deliveries_per_s"],
            "fanout_p99_ms_on": f_on["p99_ms"], "fanout_p99_ms_off": f_off["p99_ms"],
            "fanout_lost_on": f_on["lost"], "fanout_lost_off": f_off["lost"]});
        println!("{line}");
        rows.push(line);
    }
    let median_of = |key: &str| crate::median(rows.iter().filter_map(|r| r[key].as_f64()).collect());
    let keys = [
        "redis_cpu_ms_burst_on",
        "redis_cpu_ms_burst_off",
        "redis_cpu_us_per_join",
        "redis_cpu_ms_per_s_held_on",
        "redis_cpu_ms_per_s_held_off",
        "script_calls_burst",
        "script_calls_per_s_held",
        "fanout_deliveries_per_s_on",
        "fanout_deliveries_per_s_off",
        "fanout_p99_ms_on",
        "fanout_p99_ms_off",
    ];
    let mut out = serde_json::Map::new();
    for k in keys {
        let m = median_of(k);
        eprintln!("  presence {k:<30} {m:>12.2}");
        out.insert(format!("presence.{k}"), json!(m));
    }
    out.insert(
        "presence.fanout_p99_ratio_on_vs_off".into(),
        json!(median_of("fanout_p99_ms_on") / median_of("fanout_p99_ms_off")),
    );
    Value::Object(out)
}
