//! The Rust worker against the real npm `bullmq` (tests/node/bullmq-driver.mjs) on a real
//! redis-server: Node producers, QueueEvents and a Node worker see the Rust worker as one of
//! their own; events reach the bus exactly once per job, through retries and kill -9.

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use common::bus;
use event_bus::{Broker, Channel, Delivery};
use serde_json::Value;
use testkit::{node::NodeScript, process::Service, schemas::Schemas, RedisServer};

const T: Duration = Duration::from_secs(90);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_worker-emitter"))
}

fn worker(redis: &RedisServer, instance: &str, extra: &[(&str, &str)]) -> Service {
    let mut env: HashMap<String, String> = [
        ("REDIS_URL", redis.url()),
        ("INSTANCE_ID", instance.to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        // The driver's sources are on loopback.
        ("RAKUDA__INVENTORY__ALLOW_PRIVATE_SOURCES", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Service::start(bin(), &env).expect("start worker-emitter")
}

fn node(redis: &RedisServer, args: &[&str]) -> NodeScript {
    NodeScript::start("bullmq-driver.mjs", args, &[("REDIS_PORT", redis.port().to_string())])
}

fn finish(script: NodeScript) -> Value {
    tokio::task::block_in_place(|| script.finish(T))
}

fn xlen(redis: &RedisServer, channel: &str) -> u64 {
    redis
        .cli(&["XLEN", &format!("rakuda:realtime:stream:{{{channel}}}")])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_job_completes_in_rust_and_its_event_arrives() {
    let redis = RedisServer::start().unwrap();
    let _w = worker(&redis, "w1", &[]);
    let bus = bus(&redis).await;
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let r = finish(node(&redis, &["complete"]));
    let emitted = r["value"]["emitted"][0]
        .as_str()
        .expect("an emitted event id")
        .to_owned();
    assert_eq!(
        r["events"].as_array().unwrap().last().unwrap()["ev"],
        "completed",
        "{r}"
    );
    assert_eq!(
        r["events"].as_array().unwrap().last().unwrap()["returnvalue"],
        r["value"]
    );
    assert_eq!(r["counts"]["completed"], 1, "{r}");
    assert_eq!(
        r["counts"]["waiting"].as_u64().unwrap() + r["counts"]["active"].as_u64().unwrap(),
        0
    );
    let d = tokio::time::timeout(T, sub.next()).await.unwrap().unwrap();
    let Delivery::Event(env) = d else { panic!("{d:?}") };
    assert_eq!(env.id.to_string(), emitted);
    assert_eq!(env.payload.id, "ord_node-1");
    Schemas::load().assert_valid(
        "order-received.schema.json",
        &serde_json::from_str(&env.to_json()).unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_fixed_and_exponential_backoff_then_final_failure() {
    let redis = RedisServer::start().unwrap();
    let _w = worker(&redis, "w1", &[]);
    let r = finish(node(&redis, &["retries"]));
    for case in ["fixed", "expo"] {
        let events: Vec<&str> = r[case]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        let delayed = events
            .iter()
            .position(|e| *e == "delayed")
            .expect("delayed after the failure");
        let completed = events.iter().position(|e| *e == "completed").expect("completed");
        assert!(delayed < completed, "{case}: {events:?}");
        assert!(!events.contains(&"failed"), "{case}: {events:?}");
        assert_eq!(r[case]["value"]["reason"], "first_seen", "{r}");
    }
    let doomed: Vec<&str> = r["doomed"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(doomed.iter().filter(|e| **e == "delayed").count(), 2, "{doomed:?}");
    assert!(doomed.ends_with(&["failed", "retries-exhausted"]), "{doomed:?}");
    assert_eq!(r["doomed"]["hits"], 3);
    let reason = r["doomed"]["error"].as_str().unwrap();
    assert!(
        reason.contains("HTTP 500") && reason.contains("/always-down"),
        "{reason}"
    );
    // Invalid data: one attempt, however many were allowed, with a reason a person can act on.
    assert_eq!(r["invalid"]["attemptsMade"], 1, "{r}");
    let reason = r["invalid"]["failedReason"].as_str().unwrap();
    assert!(reason.starts_with("invalid job data: "), "{reason}");
    assert_eq!(r["invalid"]["error"], r["invalid"]["failedReason"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_priorities_and_delays_are_honoured() {
    let redis = RedisServer::start().unwrap();
    let _w = worker(&redis, "w1", &[("WORKER_CONCURRENCY", "1")]);
    let r = finish(node(&redis, &["ordering"]));
    let paused = &r["whilePaused"];
    assert_eq!(paused["active"], 0, "{r}");
    assert_eq!(paused["completed"], 0, "{r}");
    assert_eq!(
        paused["waiting"].as_u64().unwrap() + paused["paused"].as_u64().unwrap(),
        1,
        "{r}"
    );
    assert_eq!(r["priorityOrder"], serde_json::json!([1, 5, 10]), "{r}");
    assert!(r["delayedWaitedMs"].as_u64().unwrap() >= 1000, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_runs_every_job_once() {
    let redis = RedisServer::start().unwrap();
    let _a = worker(&redis, "rust-a", &[]);
    let _b = worker(&redis, "rust-b", &[]);
    let r = finish(node(&redis, &["fleet", "5000"]));
    assert_eq!(r["counts"]["failed"], 0, "{r}");
    assert_eq!(r["completedEvents"], 5000, "{r}");
    assert_eq!(r["completedTwice"], 0, "{r}");
    assert!(r["byRust"].as_u64().unwrap() > 0, "{r}");
    // Every job the Rust workers completed emitted its listing's event, once.
    assert_eq!(xlen(&redis, "listings"), r["byRust"].as_u64().unwrap(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_in_a_loop_while_10k_jobs_flow_emits_each_event_once() {
    let redis = RedisServer::start().unwrap();
    let fast = [
        ("RAKUDA__LOCK_DURATION_MS", "1000"),
        ("RAKUDA__STALLED_INTERVAL_MS", "300"),
        ("RAKUDA__MAX_STALLED_COUNT", "50"),
    ];
    let mut w = worker(&redis, "victim", &fast);
    let port = w.port;
    let flow = node(&redis, &["flow", "10000"]);
    let mut kills = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    // Kill while jobs are in flight: once jobs complete, every 150..550 ms, ten times.
    let mut done = 0;
    while kills < 10 {
        let line = tokio::task::block_in_place(|| flow.next(T)).expect("the flow went silent");
        if let Some(c) = line["progress"]["completed"].as_u64() {
            done = c;
        }
        if done == 0 {
            continue;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 400)).await;
        w.kill9();
        kills += 1;
        w = tokio::task::block_in_place(|| {
            let mut env: HashMap<String, String> = [("REDIS_URL", redis.url()), ("INSTANCE_ID", "victim".into())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            env.extend(fast.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            Service::start_on(bin(), &env, port).expect("restart")
        });
    }
    let r = finish(flow);
    assert_eq!(r["counts"]["completed"], 10_000, "{r}");
    assert_eq!(r["counts"]["failed"], 0, "{r}");
    // The kills did land mid-job: jobs were found stalled and run again.
    assert!(r["stalled"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(xlen(&redis, "orders"), 10_000, "one ORDER_RECEIVED per job, exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untested_producer_version_is_refused() {
    let redis = RedisServer::start().unwrap();
    redis
        .cli(&["HSET", "bull:pricing:meta", "version", "bullmq:7.0.0"])
        .unwrap();
    let out = std::process::Command::new(bin())
        .env("REDIS_URL", redis.url())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("\"pricing\"") && err.contains("bullmq:7.0.0") && err.contains("ACCEPTED_PRODUCERS"),
        "{err}"
    );
    // Accepted once someone says it was tested.
    let w = worker(&redis, "w1", &[("ACCEPTED_PRODUCERS", "bullmq:6.7.0,bullmq:7.0.0")]);
    assert_eq!(testkit::http_status(w.port, "/healthz"), Some(200));
}

#[test]
fn a_bad_config_stops_start_up_naming_the_key() {
    testkit::process::assert_bad_config(
        bin(),
        &[("REDIS_URL", "redis://127.0.0.1:1")],
        &[
            ("WORKER_CONCURRENCY", "0", "concurrency"),
            ("PROCESSORS", "orders,stock", "PROCESSORS"),
            ("RAKUDA__WEBHOOKS__SECRETS__EBAY", "short", "webhooks.secrets.ebay"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_bus_example_emits_once_however_often_it_runs() {
    let redis = RedisServer::start().unwrap();
    // `cargo test --all-targets` builds examples as target/<profile>/examples/link_bus-<hash>.
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples");
    let example = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name == "link_bus" || name.starts_with("link_bus-")) && p.extension().is_none()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("the link_bus example is built by cargo test --all-targets");
    let run = || {
        let out = std::process::Command::new(&example)
            .env("REDIS_URL", redis.url())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert_eq!(first.matches("emitted").count(), 2, "{first}");
    let again = run();
    assert_eq!(again.matches("unchanged").count(), 2, "{again}");
    assert_eq!(xlen(&redis, "pricing"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_job_in_flight_finish() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &[]);
    let script = node(&redis, &["slow"]);
    let active = tokio::task::block_in_place(|| script.next(T)).expect("the job became active");
    assert!(active["active"].is_string(), "{active}");
    w.sigterm();
    // Exits cleanly, after the job (its source answers 1.5 s after it started) completed.
    let status = tokio::task::block_in_place(|| w.wait(Duration::from_secs(25))).unwrap();
    assert!(status.success(), "{status}: {}", w.log_text());
    let r = finish(script);
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["value"]["reason"], "first_seen", "{r}");
}

/// Redis goes away while a job runs (its source answers after 3 s): the job waits for the bus
/// in place and completes when Redis is back, on its first attempt, not after a failed attempt
/// or a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_in_place_for_a_restarting_redis() {
    let mut redis = RedisServer::start().unwrap();
    let w = worker(&redis, "w1", &[]);
    let script = node(&redis, &["slow", "3000"]);
    let active = tokio::task::block_in_place(|| script.next(T)).expect("the job became active");
    assert!(active["active"].is_string(), "{active}");
    tokio::task::block_in_place(|| redis.shutdown_save()).unwrap();
    let metrics = || async {
        reqwest::get(format!("{}/metrics", w.base()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let waiting = testkit::wait_until(T, || async {
        metrics()
            .await
            .contains("worker_bus_waits_total{queue=\"inventory\"} 1")
    })
    .await;
    assert!(waiting, "the job did not wait for the bus: {}", w.log_text());
    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let r = finish(script);
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["value"]["reason"], "first_seen", "{r}");
    let m = metrics().await;
    assert!(
        m.contains("worker_jobs_total{outcome=\"completed\",queue=\"inventory\"} 1")
            && m.contains("worker_jobs_total{outcome=\"failed\",queue=\"inventory\"} 0")
            && m.contains("worker_jobs_stalled_total{queue=\"inventory\"} 0"),
        "{m}"
    );
}
