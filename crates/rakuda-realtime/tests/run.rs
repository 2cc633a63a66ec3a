//! `make run`'s binary as a person starts it: the demo source feeds the stream at once,
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
    let mut s = SseStream::connect(&format!("{}/api/realtime/events", svc.base()), None)
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let m = s.next_message(Duration::from_secs(10)).await.expect("a demo event");
    let e: event_bus::Envelope = serde_json::from_str(&m.data).unwrap();
    assert!(
        ["orders", "inventory", "pricing", "listings"].contains(&e.channel.as_str()),
        "{e:?}"
    );
    // The in-process aggregator counts the demo events into today's statistics.
    let counted = testkit::wait_until(Duration::from_secs(10), || async {
        let v: serde_json::Value = reqwest::get(format!("{}/api/realtime/stats", svc.base()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
