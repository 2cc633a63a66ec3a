//! `make run` with `REDIS_URL`: the whole designed pipeline in the all-in-one binary. The demo
//! shop enqueues BullMQ jobs, the worker-emitter's processors inside turn them into events, and
//! the Node side of `examples/node/` (real npm `bullmq` and `ioredis`) feeds the same process:
//! its jobs and its plain `PUBLISH` reach an SSE client, each event once.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use testkit::{
    node::NodeScript,
    process::{env, Service},
    sse::SseStream,
    RedisServer,
};

const T: Duration = Duration::from_secs(30);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node")
}

#[test]
fn the_examples_use_the_packages_the_tests_install() {
    let deps = |p: PathBuf| -> Value {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["dependencies"].clone()
    };
    let examples = deps(examples().join("package.json"));
    let tests = deps(testkit::node_dir().join("package.json"));
    for (name, version) in examples.as_object().unwrap() {
        assert_eq!(
            Some(version),
            tests.get(name),
            "{name}: examples/node and tests/node differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_jobs_and_node_producers_reach_the_dashboard_through_the_worker() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let env = env(&[
        ("REDIS_URL", &url),
        ("AUTH_MODE", "none"),
        ("DEMO", "true"),
        ("DEMO_RATE", "20"),
        ("SSE_DEBOUNCE_WINDOW", "0"),
        ("RUST_LOG", "warn"),
    ]);
    let svc = Service::start(Path::new(env!("CARGO_BIN_EXE_rakuda-realtime")), &env).unwrap();
    let url = format!("{}/api/realtime/events?notifications=false", svc.base());
    let mut sse = SseStream::connect(&url, None).await.unwrap();
    assert_eq!(sse.status, 200);

    // The same `bullmq` and `ioredis` versions, checked above.
    let dir = testkit::node::stage(&[examples().join("producer.mjs"), examples().join("publish.mjs")]);
    let node_env = [("REDIS_URL", redis.url())];
    let producer = NodeScript::start(dir.path().join("producer.mjs").to_str().unwrap(), &["t1"], &node_env);
    let added = producer
        .try_finish(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", svc.log_text()));
    assert_eq!(added["queue"], "pricing", "the last job added: {added}");
    let publisher = NodeScript::start(dir.path().join("publish.mjs").to_str().unwrap(), &["t1"], &node_env);
    let published = publisher.try_finish(T).unwrap();
    assert!(
        published["receivers"].as_u64().unwrap() >= 1,
        "nobody heard the PUBLISH: {published}"
    );

    // What the Node side caused, each once; and the demo's own listing updates, which only the
    // worker publishes (the demo enqueues them as jobs).
    let mut wanted: HashSet<&str> = ["prod_node_t1", "ord_node_t1", "lst_node_t1", "ord_pub_t1"].into();
    let mut seen = HashSet::new();
    let mut demo_listing = false;
    let deadline = tokio::time::Instant::now() + T;
    while !wanted.is_empty() || !demo_listing {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still missing {wanted:?} (demo listing update: {demo_listing})\n{}",
            svc.log_text()
        );
        let m = sse.next_message(T).await.expect("an event");
        let e: Value = serde_json::from_str(&m.data).unwrap();
        let id = e["payload"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(m.id.is_some() && e["id"].is_string(), "stored, with a cursor: {e}");
        if id.ends_with("_t1") {
            assert!(seen.insert(id.clone()), "{id} twice");
            wanted.remove(id.as_str());
            match id.as_str() {
                // The second observation: in stock, then out (the first is the baseline).
                "prod_node_t1" => assert_eq!(e["payload"]["data"]["isAvailable"], false, "{e}"),
                "lst_node_t1" => assert_eq!(e["payload"]["data"]["newPrice"], 24.5, "{e}"),
                _ => {}
            }
        } else if e["type"] == "LISTING_UPDATE" {
            demo_listing = true;
        }
    }
    // The demo really went through BullMQ: its listing jobs were added and completed there.
    let added: u64 = redis.cli(&["GET", "bull:listings:id"]).unwrap().parse().unwrap_or(0);
    let completed: u64 = redis
        .cli(&["ZCARD", "bull:listings:completed"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        added >= 1 && completed >= 1,
        "listing jobs added {added}, completed {completed}"
    );
}
