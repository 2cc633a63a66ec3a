//! Escalation (`docs/reference.md`, "sinks", `escalate_after_ms`) as deployed: a real
//! redis-server, a real gateway where the operator acknowledges, two sinks replicas, and a
//! local stand-in for LINE. A stock-out acknowledged within the window sends nothing, and the
//! decision says who; one no one acknowledged is sent exactly once after the window, though the
//! replica that held it is killed with SIGKILL while it waits.

mod common;

use common::*;

use event_bus::{Broker, Channel};
use serde_json::{json, Value};
use testkit::{
    process::{env, Service},
    receiver::{Receiver, Reply},
    RedisServer,
};

/// The texts LINE received.
fn texts(line: &Receiver) -> Vec<String> {
    line.requests()
        .iter()
        .map(|r| r.json()["messages"][0]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_stock_out_stays_quiet_and_an_unacknowledged_one_goes_once_through_a_kill_9() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let gw = Service::start(
        &testkit::process::workspace_bin("sse-gateway"),
        &env(&[("REDIS_URL", url.as_str()), ("AUTH_MODE", "dev"), ("RUST_LOG", "warn")]),
    )
    .unwrap();
    let alice = testkit::process::dev_token(&gw.base(), "sub=alice&role=admin").await;
    let line = Receiver::start(|_, _| Reply::ok(r#"{"sentMessages": [{"id": "1"}]}"#));
    let (_dir, config) = config_file(&format!(
        r#"
[destinations.line]
kind = "line"
token = "env:TEST_LINE_TOKEN"
to = "U4af4980629"
url = "{line}/v2/bot/message/push"

[routes.unacknowledged]
channels = ["inventory"]
when = ["payload.data.isAvailable == false"]
destinations = ["line"]
template = "Out of stock: {{payload.id}}"
escalate_after_ms = 2000
unless = "acknowledged"
"#,
        line = line.base(),
    ));
    let vars = |instance: &'static str| {
        [
            ("TEST_LINE_TOKEN", "line-token"),
            ("INSTANCE_ID", instance),
            ("RAKUDA__DELIVERY__TIMEOUT_MS", "500"),
            ("RAKUDA__DELIVERY__LEASE_TTL_MS", "1500"),
        ]
    };
    let (mut one, bus) = start_sinks(&redis, &config, &vars("sinks-one")).await;
    let (mut two, _) = start_sinks(&redis, &config, &vars("sinks-two")).await;

    // A: acknowledged on the dashboard within the window.
    let a = bus
        .publish(&Channel::INVENTORY, stockout("prod_acked"))
        .await
        .unwrap()
        .id;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/events/{a}/acks?channel=inventory", gw.base()))
        .bearer_auth(&alice)
        .json(&json!({"kind": "acknowledged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // B: nobody acknowledges it.
    let b = bus
        .publish(&Channel::INVENTORY, stockout("prod_nobody"))
        .await
        .unwrap()
        .id;

    // The dashboard's panel lists B as waiting; the replica holding the route's lease then dies.
    let panel = || async {
        let v = testkit::process::get_json(&format!("{}/api/sinks/destinations", gw.base()), &alice).await;
        v["escalations"].clone()
    };
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let p = panel().await;
        let waiting: Vec<&str> = p["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["event_id"].as_str())
            .collect();
        if waiting.contains(&b.to_string().as_str()) {
            assert_eq!(p["routes"][0]["rule"]["escalate_after_ms"], 2000, "{p}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "B never waited: {p}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let holder = redis
        .cli(&["GET", "rakuda:realtime:sinks:lease:{escalate:unacknowledged}"])
        .unwrap();
    if holder.starts_with("sinks-one/") {
        one.kill9();
    } else {
        assert!(holder.starts_with("sinks-two/"), "the lease's holder: {holder:?}");
        two.kill9();
    }

    // B reaches LINE after the window; A never does.
    let deadline = tokio::time::Instant::now() + T;
    while !texts(&line).iter().any(|t| t.contains("prod_nobody")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B was not sent to LINE: {}\nthe sinks' logs:\n{}\n{}",
            panel().await,
            one.log_text(),
            two.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let decided = |p: &Value, id: String| {
        p["decided"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["event_id"] == id.as_str())
            .cloned()
    };
    let deadline = tokio::time::Instant::now() + T;
    let p = loop {
        let p = panel().await;
        if decided(&p, a.to_string()).is_some() && decided(&p, b.to_string()).is_some() {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "not both decided: {p}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let da = decided(&p, a.to_string()).unwrap();
    assert_eq!(
        (da["decision"].as_str(), da["by"].as_str()),
        (Some("suppressed"), Some("alice")),
        "{da}"
    );
    let db = decided(&p, b.to_string()).unwrap();
    assert_eq!(db["decision"], "sent", "{db}");
    let waited = db["decided_at"].as_str().unwrap().parse::<u64>().unwrap() - b.ms;
    assert!(
        waited >= 2000,
        "sent {waited} ms after the event: not before the window"
    );

    // C, after: once it is on LINE, B was not sent again meanwhile, and A never was.
    let c = bus
        .publish(&Channel::INVENTORY, stockout("prod_later"))
        .await
        .unwrap()
        .id;
    until("C sent to LINE", || {
        texts(&line).iter().any(|t| t.contains("prod_later"))
    })
    .await;
    let all = texts(&line);
    assert_eq!(all.iter().filter(|t| t.contains("prod_nobody")).count(), 1, "{all:?}");
    assert_eq!(all.iter().filter(|t| t.contains("prod_acked")).count(), 0, "{all:?}");
    assert!(c > b);
}
