//! Gateway and stats-aggregator processes on one redis-server: what the gateways deliver shows
//! up, folded into the day, at `/api/realtime/stats?date=` and `/stats/range`; bad queries get
//! a 400 with a JSON body.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use serde_json::{json, Value};
use testkit::{
    process::{workspace_bin, Service},
    schemas::Schemas,
    sse::SseStream,
    RedisServer,
};

const T: Duration = Duration::from_secs(30);

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_shows_events_and_gateway_figures() {
    let redis = RedisServer::start().unwrap();
    let gw = Service::start(
        &workspace_bin("sse-gateway"),
        &env(&[
            ("REDIS_URL", redis.url()),
            ("INSTANCE_ID", "gw-a".into()),
            ("AUTH_MODE", "none".into()),
            ("SSE_DEBOUNCE_WINDOW", "0".into()),
            ("RAKUDA__FIGURES_INTERVAL_MS", "200".into()),
            ("RUST_LOG", "warn".into()),
        ]),
    )
    .unwrap();
    let agg = Service::start(
        &workspace_bin("stats-aggregator"),
        &env(&[
            ("REDIS_URL", redis.url()),
            ("INSTANCE_ID", "agg-a".into()),
            ("RAKUDA__POLL_INTERVAL_MS", "20".into()),
            ("RAKUDA__GATEWAY_INTERVAL_MS", "200".into()),
            ("RUST_LOG", "warn".into()),
        ]),
    )
    .unwrap();
    let mut sse = SseStream::connect(&format!("{}/api/realtime/events?channels=orders", gw.base()), None)
        .await
        .unwrap();
    let events: Vec<Value> = (0..10)
        .map(|i| {
            json!({"channel": "orders", "type": "ORDER_RECEIVED",
                   "payload": {"id": format!("ord_{i}"), "action": "created"}})
        })
        .collect();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/realtime/publish", gw.base()))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for _ in 0..10 {
        assert!(sse.next_message(T).await.is_some(), "an event did not arrive");
    }

    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    let schemas = Schemas::load();
    let last = std::sync::Mutex::new(Value::Null);
    let ok = testkit::wait_until(T, || {
        let (base, today, last) = (gw.base(), today.clone(), &last);
        async move {
            let (status, v) = get(&base, &format!("/api/realtime/stats?date={today}")).await;
            *last.lock().unwrap() = v.clone();
            let d = &v["daily"];
            status == 200
                && d["events"] == 10
                && d["by_type"]["ORDER_RECEIVED"] == 10
                && d["gateways"]["delivered"].as_u64() >= Some(10)
                && d["gateways"]["connections_peak"].as_u64() >= Some(1)
                && d["gateways"]["latency_p99_ms"].is_number()
        }
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(ok, "{last:#}\n{}", agg.log_text());
    schemas.assert_valid("stats.schema.json", &last);
    // Folding is by delta: the figures keep being folded in, the deliveries are not re-added.
    let delivered = last["daily"]["gateways"]["delivered"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await; // three folds, bounded: nothing to await
    let (_, again) = get(&gw.base(), "/api/realtime/stats").await;
    assert_eq!(
        again["daily"]["gateways"]["delivered"].as_u64(),
        Some(delivered),
        "{again:#}"
    );

    let (status, range) = get(
        &gw.base(),
        &format!("/api/realtime/stats/range?from=2026-01-01&to={today}"),
    )
    .await;
    assert_eq!(status, 200, "{range}");
    schemas.assert_valid("stats-range.schema.json", &range);
    assert_eq!(range["total"]["events"], 10);
    assert_eq!(range["days"].as_array().unwrap().last().unwrap()["date"], json!(today));

    let metrics = reqwest::get(format!("{}/metrics", agg.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stats_aggregator_events_total{channel=\"orders\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stats_aggregator_lag_events{channel=\"orders\"} 0"),
        "{metrics}"
    );

    for (path, code) in [
        ("/api/realtime/stats?date=2026-02-30", "invalid_date"),
        ("/api/realtime/stats?date=yesterday", "invalid_date"),
        ("/api/realtime/stats?day=2026-01-01", "invalid_query"),
        (
            "/api/realtime/stats/range?from=2026-01-02&to=2026-01-01",
            "invalid_range",
        ),
        (
            "/api/realtime/stats/range?from=2020-01-01&to=2026-01-01",
            "invalid_range",
        ),
        ("/api/realtime/stats/range?from=2026-01-01", "invalid_date"),
    ] {
        let (status, body) = get(&gw.base(), path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], code, "{path}: {body}");
        schemas.assert_valid("error.schema.json", &body);
    }
}
