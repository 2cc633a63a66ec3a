//! The signed order intake as a marketplace calls it, and the processors' events as browsers
//! receive them (valid against proto-schemas/), on a real redis-server and worker process.

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use common::bus;
use event_bus::{Broker, Channel, Delivery};
use serde_json::{json, Value};
use testkit::{node::NodeScript, process::Service, schemas::Schemas, RedisServer};

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "test-only-secret-0123456789";

/// A worker taking one job at a time per queue, so jobs about one entity run in the order added.
fn worker(redis: &RedisServer) -> Service {
    let env: HashMap<String, String> = [
        ("WORKER_CONCURRENCY", "1".to_owned()),
        ("REDIS_URL", redis.url()),
        ("INSTANCE_ID", "w1".to_owned()),
        ("RAKUDA__WEBHOOKS__SECRETS__EBAY", SECRET.to_owned()),
        ("RAKUDA__WEBHOOKS__MAX_BODY_BYTES", "4096".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Service::start(Path::new(env!("CARGO_BIN_EXE_worker-emitter")), &env).expect("start worker-emitter")
}

fn jobs_added(redis: &RedisServer) -> u64 {
    redis
        .cli(&["GET", "bull:orders:id"])
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The timestamp this test process signs with: its start, so a signature and the header
/// sent with it always agree.
fn ts() -> &'static str {
    static TS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TS.get_or_init(|| (event_bus::Timestamp::now_ms() / 1000).to_string())
}

/// `body`'s signature with [`ts`].
fn sign(secret: &[u8], body: &[u8]) -> String {
    worker_emitter::webhook::sign(secret, ts(), body)
}

async fn post(base: &str, marketplace: &str, body: &str, signature: Option<&str>) -> (u16, Value) {
    post_at(base, marketplace, body, signature, Some(ts())).await
}

async fn post_at(
    base: &str,
    marketplace: &str,
    body: &str,
    signature: Option<&str>,
    timestamp: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/webhooks/orders/{marketplace}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header("x-signature", s);
    }
    if let Some(t) = timestamp {
        req = req.header("x-signature-timestamp", t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_orders_are_queued_once_per_order_and_bad_ones_refused() {
    let redis = RedisServer::start().unwrap();
    let w = worker(&redis);
    let schemas = Schemas::load();
    let bus = bus(&redis).await;
    let mut sub = bus.subscribe(&[Channel::ORDERS], None).await.unwrap();
    let body = r#"{"orderId":"eb-1001","total":59.9,"currency":"EUR","items":[{"sku":"a","quantity":2}]}"#;
    // The marketplace delivers the same notification three times.
    for _ in 0..3 {
        let (status, v) = post(&w.base(), "ebay", body, Some(&sign(SECRET.as_bytes(), body.as_bytes()))).await;
        assert_eq!(status, 202, "{v}");
        assert!(v["job_id"].is_string(), "{v}");
    }
    let d = tokio::time::timeout(T, sub.next()).await.unwrap().unwrap();
    let Delivery::Event(env) = d else { panic!("{d:?}") };
    assert_eq!(env.payload.id, "eb-1001");
    assert_eq!(env.payload.data.as_ref().unwrap()["items"], 1);
    schemas.assert_valid(
        "order-received.schema.json",
        &serde_json::from_str(&env.to_json()).unwrap(),
    );
    // All three jobs done, one event.
    let done = testkit::wait_until(T, || async {
        redis.cli(&["ZCARD", "bull:orders:completed"]).unwrap().trim() == "3"
    })
    .await;
    assert!(done, "{}", w.log_text());
    assert_eq!(
        redis.cli(&["XLEN", "rakuda:realtime:stream:{orders}"]).unwrap().trim(),
        "1"
    );

    let before = jobs_added(&redis);
    let other = r#"{"orderId":"eb-1002","total":1,"currency":"EUR"}"#;
    let big = format!(
        r#"{{"orderId":"x","total":1,"currency":"EUR","note":"{}"}}"#,
        "x".repeat(5000)
    );
    for (marketplace, body, sig, status, code) in [
        ("ebay", other, None, 401, "missing_signature"),
        (
            "ebay",
            other,
            Some(sign(b"not-the-secret-at-all", other.as_bytes())),
            401,
            "bad_signature",
        ),
        (
            "ebay",
            other,
            Some(sign(SECRET.as_bytes(), body.as_bytes())),
            401,
            "bad_signature",
        ),
        (
            "amazon",
            other,
            Some(sign(SECRET.as_bytes(), other.as_bytes())),
            404,
            "unknown_marketplace",
        ),
        (
            "ebay",
            "{not json",
            Some(sign(SECRET.as_bytes(), b"{not json")),
            400,
            "invalid_body",
        ),
        (
            "ebay",
            r#"{"total":1,"currency":"EUR"}"#,
            Some(sign(SECRET.as_bytes(), br#"{"total":1,"currency":"EUR"}"#)),
            400,
            "invalid_order",
        ),
        (
            "ebay",
            r#"{"orderId":"a","marketplace":"amazon","total":1,"currency":"EUR"}"#,
            Some(sign(
                SECRET.as_bytes(),
                br#"{"orderId":"a","marketplace":"amazon","total":1,"currency":"EUR"}"#,
            )),
            400,
            "invalid_body",
        ),
        (
            "ebay",
            big.as_str(),
            Some(sign(SECRET.as_bytes(), big.as_bytes())),
            413,
            "body_too_large",
        ),
    ] {
        let (got, v) = post(&w.base(), marketplace, body, sig.as_deref()).await;
        assert_eq!(
            (got, v["code"].as_str()),
            (status, Some(code)),
            "{marketplace} {body:.60}: {v}"
        );
        schemas.assert_valid("error.schema.json", &v);
    }
    let (_, v) = post(
        &w.base(),
        "ebay",
        r#"{"total":1,"currency":"EUR"}"#,
        Some(&sign(SECRET.as_bytes(), br#"{"total":1,"currency":"EUR"}"#)),
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("orderId"), "{v}");
    // A captured delivery replayed later, or one whose timestamp was changed: refused.
    let now = event_bus::Timestamp::now_ms() / 1000;
    for (t, code) in [
        // Well past the 300 s tolerance, so the second the server reads its clock in does
        // not matter.
        (Some((now - 330).to_string()), "stale_signature"),
        (Some((now + 330).to_string()), "stale_signature"),
        (Some("yesterday".to_owned()), "stale_signature"),
        // Signed with ts(), sent with another.
        (Some((ts().parse::<u64>().unwrap() + 1).to_string()), "bad_signature"),
        (None, "missing_timestamp"),
    ] {
        let signed_then = t
            .as_deref()
            .map(|t| worker_emitter::webhook::sign(SECRET.as_bytes(), t, other.as_bytes()));
        // The signature is right for its timestamp, except where the timestamp was changed.
        let sig = match code {
            "bad_signature" => sign(SECRET.as_bytes(), other.as_bytes()),
            _ => signed_then.unwrap_or_else(|| sign(SECRET.as_bytes(), other.as_bytes())),
        };
        let (got, v) = post_at(&w.base(), "ebay", other, Some(&sig), t.as_deref()).await;
        assert_eq!((got, v["code"].as_str()), (401, Some(code)), "{t:?}: {v}");
    }
    assert_eq!(
        jobs_added(&redis),
        before,
        "a refused request must not enqueue anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_emit_real_changes_only_and_valid_events() {
    let redis = RedisServer::start().unwrap();
    let _w = worker(&redis);
    let schemas = Schemas::load();
    let bus = bus(&redis).await;
    let channels = [Channel::INVENTORY, Channel::PRICING, Channel::LISTINGS];
    let mut sub = bus.subscribe(&channels, None).await.unwrap();
    let port = redis.port().to_string();
    let add = |queue: &str, data: Value| {
        let s = NodeScript::start(
            "bullmq-driver.mjs",
            &["add", queue, "job", &data.to_string()],
            &[("REDIS_PORT", port.clone())],
        );
        tokio::task::block_in_place(|| s.finish(T))
    };
    let stock = |available: bool, price: f64| json!({"productId": "p-1", "isAvailable": available, "price": price, "currency": "USD", "source": "shop"});
    // Added one at a time, each waited for by its event (or by the next one's), in order.
    add("inventory", stock(true, 10.0)); // baseline: no event
    add("inventory", stock(true, 10.0)); // unchanged: no event
    add("inventory", stock(false, 10.0)); // stock-out
    add(
        "pricing",
        json!({"listingId": "l-1", "newPrice": 20.0, "currency": "USD", "reason": "sync"}),
    );
    add("listings", json!({"listingId": "l-1", "status": "active"}));
    add("listings", json!({"listingId": "l-1", "status": "active"})); // unchanged
    add("inventory", stock(true, 12.0)); // back in stock at a new price
    let mut got = Vec::new();
    while got.len() < 4 {
        let d = tokio::time::timeout(T, sub.next()).await.expect("an event").unwrap();
        if let Delivery::Event(env) = d {
            got.push(env);
        }
    }
    let file = |t: &str| match t {
        "INVENTORY_CHANGE" => "inventory-change.schema.json",
        "PRICE_CHANGE" => "price-change.schema.json",
        _ => "listing-update.schema.json",
    };
    for env in &got {
        schemas.assert_valid(
            file(env.event_type.as_str()),
            &serde_json::from_str(&env.to_json()).unwrap(),
        );
    }
    let inv: Vec<&Value> = got
        .iter()
        .filter(|e| e.channel == Channel::INVENTORY)
        .map(|e| e.payload.data.as_ref().unwrap())
        .collect();
    assert_eq!(inv.len(), 2, "{got:?}");
    assert_eq!(
        (inv[0]["isAvailable"].as_bool(), inv[0]["wasAvailable"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(inv[0]["priceChanged"], false);
    assert_eq!(
        (inv[1]["isAvailable"].as_bool(), inv[1]["priceChanged"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(inv[1]["previousPrice"], 10.0);
    let price = got.iter().find(|e| e.channel == Channel::PRICING).unwrap();
    assert_eq!(price.payload.data.as_ref().unwrap()["oldPrice"], Value::Null);
    // Nothing else was emitted: the unchanged jobs stay silent. Proving an absence needs a
    // bounded wait; every job was taken before the last event arrived (one at a time, in order).
    let more = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(more.is_err(), "an unchanged job emitted: {more:?}");
}
