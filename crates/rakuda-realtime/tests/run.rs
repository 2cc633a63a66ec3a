//! `make run`'s binary as a person starts it: development tokens from `/api/dev/token` (and
//! none is no entry), the demo source feeds the stream at once and notifies the `dev` user,
//! SIGTERM stops it cleanly, and a bad setting stops it before it binds a port.

use std::{collections::HashMap, path::Path, time::Duration};

use testkit::{process::Service, sse::SseStream};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_events_stream_and_sigterm_exits_zero() {
    let bin = Path::new(env!("CARGO_BIN_EXE_rakuda-realtime"));
    let mut svc = Service::start(bin, &env(&[("DEMO", "true"), ("DEMO_RATE", "50"), ("REDIS_URL", "")])).unwrap();
    // AUTH_MODE=dev: tokens are checked, and handed out to whoever asks.
    let events = format!("{}/api/realtime/events", svc.base());
    let refused = reqwest::get(&events).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401, "a stream needs a token");
    let token = &testkit::process::dev_token(&svc.base(), "").await;
    let mut s = SseStream::connect(&format!("{events}?access_token={token}"), None)
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let first = s
        .next_message(Duration::from_secs(10))
        .await
        .expect("the unread notifications");
    let snapshot: serde_json::Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(snapshot["type"], "NOTIFICATION_UNREAD", "{snapshot}");
    // Shop events at once; a stock-out soon notifies `dev` (bounded: 50 events/s, a quarter
    // of them stock changes), before this stream opened (then it is in the snapshot) or after.
    let mut shop_event = false;
    let mut notified = snapshot["notifications"].as_array().is_some_and(|n| {
        n.iter()
            .any(|n| n["user_id"] == "dev" && n["title"].as_str().is_some_and(|t| t.starts_with("Out of stock")))
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(shop_event && notified) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shop event {shop_event}, notification {notified}"
        );
        let m = s.next_message(Duration::from_secs(10)).await.expect("a demo event");
        let v: serde_json::Value = serde_json::from_str(&m.data).unwrap();
        match v["channel"].as_str() {
            Some("orders" | "inventory" | "pricing" | "listings") => shop_event = true,
            Some("notifications") => {
                assert_eq!(v["type"], "NOTIFICATION", "{v}");
                let p = v
                    .get("payloads")
                    .map(|p| p[0].clone())
                    .unwrap_or_else(|| v["payload"].clone());
                assert_eq!(p["data"]["user_id"], "dev", "{v}");
                notified = true;
            }
            other => panic!("unexpected channel {other:?}: {v}"),
        }
    }
    // The in-process aggregator counts the demo events into today's statistics.
    let counted = testkit::wait_until(Duration::from_secs(10), || async {
        let v = testkit::process::get_json(&format!("{}/api/realtime/stats", svc.base()), token).await;
        v["daily"]["events"].as_u64() > Some(0) && v["daily"]["hours"].as_array().is_some_and(|h| h.len() == 24)
    })
    .await;
    assert!(counted, "no demo events in today's statistics:\n{}", svc.log_text());
    svc.sigterm();
    let status = tokio::task::block_in_place(|| svc.wait(Duration::from_secs(15))).unwrap();
    assert!(status.success(), "exit status {status}:\n{}", svc.log_text());
}

#[test]
fn bad_configuration_exits_64_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rakuda-realtime"))
        .env("SSE_HEARTBEAT_INTERVAL", "often")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("heartbeat_interval_ms") && err.contains("SSE_HEARTBEAT_INTERVAL"),
        "{err}"
    );
}
