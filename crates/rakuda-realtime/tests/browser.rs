//! The dashboard in Debian's Chromium (playwright-core, tests/node/browser-test.mjs), as an
//! operator sees it: toasts and feed entries within 1 s of publishing, grouped bursts, toasts
//! that never get in the way; with Redis behind it: stop Redis -> red, events published straight
//! into Redis when it is back -> green and they appear; the notification bell on two pages of one
//! user, read on one clearing the other; 8 tabs of one browser live on one stream.
//! Screenshots: target/artifacts/browser/.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus};
use serde_json::Value;
use testkit::{node::NodeScript, process::Service, RedisServer};

const T: Duration = Duration::from_secs(60);

fn artifacts(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/artifacts/browser")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(redis_url: &str) -> Service {
    start_with(redis_url, &[])
}

fn start_with(redis_url: &str, extra: &[(&str, &str)]) -> Service {
    let log = if redis_url.is_empty() { "warn" } else { "info" };
    let env: HashMap<String, String> = [("REDIS_URL", redis_url), ("DEMO", "false"), ("RUST_LOG", log)]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Service::start(std::path::Path::new(env!("CARGO_BIN_EXE_rakuda-realtime")), &env).unwrap()
}

/// As a gateway of `make up` serves the page (`AUTH_MODE=none`, the sinks elsewhere, no
/// development pages): the page asks for nothing it does not serve, so nothing fails and the
/// console stays clean (it used to ask `/api/dev/token` again and again, and `/dev/sinks`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_only_for_what_the_gateway_serves() {
    let svc = start_with("", &[("AUTH_MODE", "none"), ("SINKS_ENABLED", "false")]);
    let dir = artifacts("quiet");
    let r = tokio::task::block_in_place(|| browser(&svc.base(), &dir, "quiet").finish(T));
    assert_eq!(r["failed"], serde_json::json!([]), "{r}");
    assert_eq!(r["consoleErrors"], serde_json::json!([]), "{r}");
}

fn browser(base: &str, dir: &std::path::Path, mode: &str) -> NodeScript {
    NodeScript::start("browser-test.mjs", &[base, dir.to_str().unwrap(), mode], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toasts_and_feed_within_a_second_and_out_of_the_way() {
    let svc = start("");
    let dir = artifacts("memory");
    let r = tokio::task::block_in_place(|| browser(&svc.base(), &dir, "memory").finish(T));
    let latencies: Vec<u64> = r["latencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(latencies.len(), 3, "{r}");
    assert!(
        latencies.iter().all(|ms| *ms < 1000),
        "publish -> toast and feed entry: {latencies:?} ms"
    );
    assert_eq!(r["focusIsToast"], false, "{r}");
    assert_eq!(r["toastPointer"], "none", "{r}");
    assert!(
        r["filtered"].as_array().unwrap().iter().all(|c| c == "orders"),
        "the orders filter: {r}"
    );
    assert_eq!(r["feedCount"], 15, "{r}");
    assert!(r["toasts"].as_u64().unwrap() <= 3, "a burst makes one toast: {r}");
    assert_eq!(r["consoleErrors"], Value::Array(vec![]), "{r}");
    assert!(dir.join("dashboard.png").is_file());
    // The bell on two pages of the same user: read on one, cleared on the other within 1 s.
    assert_eq!(r["bell"]["notifyToast"], 1, "a new notification toasts: {r}");
    assert_eq!(r["bell"]["readOnA"], "true", "{r}");
    let clear = r["bell"]["clearMs"].as_u64().unwrap();
    assert!(
        clear < 1000,
        "read on one page cleared the other's badge after {clear} ms"
    );
    assert!(dir.join("bell.png").is_file());
    // The JS client's WebSocket mode in Chromium: an order through it, and a command's ack.
    assert_eq!(r["ws"], serde_json::json!({"id": "ord_ws_1", "pong": "pong"}), "{r}");
    // 8 dashboard tabs of one browser: all live, on one stream, an order in every one.
    assert_eq!(r["tabs"], serde_json::json!({"live": 8, "streams": 1}), "{r}");
    println!(
        "publish -> toast + feed: {latencies:?} ms; read -> other page's badge cleared: {clear} ms; screenshots in {}",
        dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_turns_red_and_events_published_meanwhile_appear_on_resume() {
    let mut redis = RedisServer::start().unwrap();
    let svc = start(&redis.url());
    let dir = artifacts("redis");
    let mut b = browser(&svc.base(), &dir, "redis");
    let live = tokio::task::block_in_place(|| b.next(T)).expect("the dashboard went live");
    assert_eq!(live["phase"], "live", "{live}");
    redis.shutdown_save().unwrap();
    b.send("stopped");
    let red = tokio::task::block_in_place(|| b.next(T)).expect("the indicator turned red");
    assert_eq!(red["phase"], "red", "{red}");
    redis.restart().unwrap();
    // Straight into Redis, before the gateway's reader is back.
    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let ids = ["ord_while_down_1", "ord_while_down_2", "ord_while_down_3"];
    for id in ids {
        bus.publish(
            &Channel::ORDERS,
            NewEvent::new(EventType::ORDER_RECEIVED, Payload::new(id, Action::Created)),
        )
        .await
        .unwrap();
    }
    b.send(&format!("restarted {}", ids.join(",")));
    let r = tokio::task::block_in_place(|| b.try_finish(T))
        .unwrap_or_else(|e| panic!("{e}\nthe service's log:\n{}", svc.log_text()));
    assert_eq!(r["phase"], "resumed", "{r}");
    let feed: Vec<&str> = r["feed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        &feed[..3],
        &["ord_while_down_3", "ord_while_down_2", "ord_while_down_1"],
        "{r}"
    );
    for shot in ["redis-live.png", "redis-down.png", "redis-resumed.png"] {
        assert!(dir.join(shot).is_file(), "{shot}");
    }
}

/// `make run`'s development destinations (`/dev/sinks`): a stock-out and an order published
/// reach every destination's column, rendered as it would show them; the page, as the
/// browser, decrypts the Web Push message and verifies its VAPID signature, and the webhook's
/// signature; the dashboard lists the destinations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_shows_what_each_destination_received() {
    // LINE gets a stock-out no one acknowledged, after the (shortest) window.
    let app = start_with("", &[("SINKS_ESCALATE_MS", "1000")]);
    let dir = artifacts("dev-sinks");
    let r = tokio::task::block_in_place(|| {
        NodeScript::start("dev-sinks-test.mjs", &[&app.base(), dir.to_str().unwrap()], &[]).finish(T)
    });
    assert_eq!(r["consoleErrors"], Value::Array(vec![]), "{r}");
    assert_eq!(r["vapid"], "true", "the VAPID JWT verified: {r}");
    for d in ["slack", "line", "push", "webhook", "discord"] {
        assert!(r["seen"][d].as_u64().is_some(), "{d}: {r}");
    }
    // Worded for a person on a phone, not a field dump.
    let line = r["lineText"].as_str().unwrap();
    let want = format!("Out of stock: {} (5 USD)", r["product"].as_str().unwrap());
    assert!(line.contains(&want), "LINE got {line:?}, not {want:?}");
    let push = r["pushText"].as_str().unwrap();
    assert!(
        push.contains("decrypted ✓ · VAPID ✓ (mailto:dev@localhost) · TTL 3600 · high"),
        "{r}"
    );
    assert_eq!(
        r["rows"],
        serde_json::json!(["discord", "line", "push", "slack", "webhook"]),
        "{r}"
    );
    assert!(dir.join("dev-sinks.png").is_file());
    println!("publish -> each destination's column: {} ms", r["seen"]);
}
