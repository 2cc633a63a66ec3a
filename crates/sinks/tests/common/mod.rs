//! What the sinks' service tests share: the binary, bounded waits, a configuration file, a
//! ready service with a bus to publish on, sample events, metrics.

#![allow(dead_code)] // each test binary uses some

use std::{path::Path, time::Duration};

use event_bus::{Action, BusConfig, EventType, NewEvent, Payload};
use serde_json::json;
use testkit::process::Service;

pub const T: Duration = Duration::from_secs(30);

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sinks"))
}

/// Waits (bounded) until `cond` holds; polls, since the receivers have no event to await.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "not within {T:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A configuration file with `text` (the directory lives as long as the first value).
pub fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sinks.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Waits until `svc` is ready (every channel has a position), then a bus to publish on.
pub async fn ready_bus(svc: &Service, url: &str) -> event_bus::AnyBus {
    until("ready", || testkit::http_status(svc.port, "/readyz") == Some(200)).await;
    let config = BusConfig {
        redis_url: Some(url.to_owned()),
        ..Default::default()
    };
    event_bus::connect(config).await.unwrap()
}

/// The sinks with the configuration file `config` on `redis` and the variables `extra` (which
/// may set `RUST_LOG`, `warn` otherwise), ready, and a bus to publish on.
pub async fn start_sinks(
    redis: &testkit::RedisServer,
    config: &Path,
    extra: &[(&str, &str)],
) -> (Service, event_bus::AnyBus) {
    let url = redis.url();
    let mut vars = vec![
        ("REDIS_URL", url.as_str()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("RUST_LOG", "warn"),
    ];
    vars.extend_from_slice(extra);
    let svc = Service::start(bin(), &testkit::process::env(&vars)).unwrap();
    let bus = ready_bus(&svc, &url).await;
    (svc, bus)
}

pub fn stockout(id: &str) -> NewEvent {
    NewEvent::new(
        EventType::INVENTORY_CHANGE,
        Payload::new(id, Action::Updated).with_data(json!({"isAvailable": false, "price": 12.5, "currency": "USD"})),
    )
}

pub fn order(id: &str) -> NewEvent {
    NewEvent::new(
        EventType::ORDER_RECEIVED,
        Payload::new(id, Action::Created).with_data(json!({"marketplace": "ebay", "total": 10, "currency": "USD"})),
    )
}

pub async fn metric(svc: &Service, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", svc.base()))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits (bounded) until a metric series has `value`.
pub async fn until_metric(svc: &Service, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + T;
    while metric(svc, series).await != Some(value) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is not {value} within {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
