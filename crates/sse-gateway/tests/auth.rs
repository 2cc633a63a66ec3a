//! Authentication and channel authorization at the HTTP edge: every refusal with its status
//! and code, tokens from the header, a cookie or the query (never logged), and a stream that
//! ends when its token expires.

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use common::Gateway;
use event_bus::{Channel, EventType};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sse_gateway::auth::AuthMode;
use testkit::{process::Service, sse::Item};

const SECRET: &str = "auth-test-secret-of-at-least-32-chars";
const T: Duration = Duration::from_secs(10);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, channels: Value, role: Option<&str>) -> Value {
    let mut c =
        json!({"sub": sub, "exp": now() + 600, "aud": "rakuda", "iss": "https://auth.test", "channels": channels});
    if let Some(r) = role {
        c["role"] = json!(r);
    }
    c
}

async fn jwt_gateway() -> Gateway {
    Gateway::start(|c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.hs256_secret = Some(SECRET.into());
        c.auth.audience = Some("rakuda".into());
        c.auth.issuer = Some("https://auth.test".into());
        c.auth.leeway_secs = 0;
    })
    .await
}

async fn status_of(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    if s == 200 && r.headers()["content-type"] == "text/event-stream" {
        return (s, Value::Null);
    }
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_bad_request_is_refused_with_its_status_and_code() {
    let gw = jwt_gateway().await;
    let http = reqwest::Client::new();
    let events = format!("{}/api/realtime/events", gw.base);
    let good = token(claims("u1", json!(["orders"]), None));
    let with = |k: &str, v: Value| {
        let mut c = claims("u1", json!(["orders"]), None);
        c[k] = v;
        token(c)
    };
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none"})),
        b64(&claims("u1", json!("*"), Some("admin")))
    );
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims("u1", json!("*"), Some("admin")),
        &EncodingKey::from_secret(b"not-the-server-secret-but-as-long-as-it"),
    )
    .unwrap();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("no token", http.get(&events), 401, "missing_token"),
        ("wrong signature", http.get(&events).bearer_auth(&forged), 401, "invalid_token"),
        ("alg none", http.get(&events).bearer_auth(&alg_none), 401, "invalid_token"),
        ("expired", http.get(&events).bearer_auth(with("exp", json!(now() - 10))), 401, "token_expired"),
        ("not yet valid", http.get(&events).bearer_auth(with("nbf", json!(now() + 600))), 401, "token_not_yet_valid"),
        ("wrong aud", http.get(&events).bearer_auth(with("aud", json!("other"))), 401, "wrong_audience"),
        ("wrong iss", http.get(&events).bearer_auth(with("iss", json!("https://evil.test"))), 401, "wrong_issuer"),
        (
            "a channel outside the claims",
            http.get(format!("{events}?channels=orders,pricing")).bearer_auth(&good),
            403,
            "forbidden_channel",
        ),
        (
            // (Without notifications=false it opens: the user's own notifications.)
            "no channel at all in the claims",
            http.get(format!("{events}?notifications=false")).bearer_auth(token(claims("u2", json!([]), None))),
            403,
            "forbidden_channel",
        ),
        (
            "publish without the publisher role",
            http.post(format!("{}/api/realtime/publish", gw.base)).bearer_auth(&good).json(
                &json!({"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "o", "action": "created"}}),
            ),
            403,
            "forbidden_role",
        ),
        (
            "connections without admin",
            http.get(format!("{}/api/realtime/connections", gw.base)).bearer_auth(token(claims("p", json!("*"), Some("publisher")))),
            403,
            "forbidden_role",
        ),
        ("status without a token", http.get(format!("{}/api/realtime/status", gw.base)), 401, "missing_token"),
        ("a dev token outside AUTH_MODE=dev", http.get(format!("{}/api/dev/token", gw.base)), 404, "not_dev_mode"),
    ];
    for (what, req, status, code) in cases {
        let (got, body) = status_of(req).await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{what}: {body}");
    }
    let (_, body) = status_of(http.get(format!("{events}?channels=orders,pricing")).bearer_auth(&good)).await;
    assert!(
        body["message"].as_str().unwrap().contains("pricing"),
        "names what is refused: {body}"
    );
    // Open: health, readiness, metrics, the dashboard.
    for path in ["/healthz", "/readyz", "/metrics", "/", "/realtime-client.js"] {
        assert_eq!(
            http.get(format!("{}{path}", gw.base)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    // And what the claims allow works.
    let ok = [
        http.get(&events).bearer_auth(&good),
        http.get(format!("{events}?channels=orders"))
            .header("cookie", format!("rakuda_token={good}")),
        http.get(format!("{events}?access_token={good}")),
        http.get(format!("{}/api/realtime/status", gw.base)).bearer_auth(&good),
        http.post(format!("{}/api/realtime/publish", gw.base))
            .bearer_auth(token(claims("svc", json!("*"), Some("publisher"))))
            .json(&json!({"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "o", "action": "created"}})),
    ];
    for req in ok {
        assert_eq!(status_of(req).await.0, 200);
    }
}

#[tokio::test]
async fn a_stream_gets_only_its_channels_and_ends_when_its_token_expires() {
    let gw = jwt_gateway().await;
    let mut c = claims("u1", json!(["orders"]), None);
    c["exp"] = json!(now() + 3);
    let t = token(c);
    // No channels asked: the claims' channels, and only them.
    let mut s = gw.open(&format!("?access_token={t}&notifications=false"), None).await;
    gw.publish(&Channel::PRICING, EventType::PRICE_CHANGE, "not-for-u1")
        .await;
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "for-u1").await;
    let m = s.next_message(T).await.expect("the orders event");
    assert!(m.data.contains("for-u1"), "{}", m.data);
    // At exp: a last message that says so, then the end.
    let mut last = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(8), s.next_item(Duration::from_secs(8))).await {
            Ok(Some(Item::Message(m))) => last = Some(m),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => panic!("the stream outlived its token"),
        }
    }
    let last = last.expect("a last message");
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(v["type"], "TOKEN_EXPIRED", "{v}");
    assert_eq!(last.id, None, "the last message moves no cursor");
}

#[tokio::test]
async fn a_token_in_the_query_never_reaches_the_log() {
    let env: HashMap<String, String> = [
        ("AUTH_MODE", "jwt"),
        ("JWT_HS256_SECRET", SECRET),
        ("RUST_LOG", "debug"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let gw = Service::start(Path::new(env!("CARGO_BIN_EXE_sse-gateway")), &env).unwrap();
    let good = token(json!({"sub": "u9", "exp": now() + 600, "channels": "*"}));
    let bad = format!("{good}x");
    let http = reqwest::Client::new();
    for t in [&good, &bad] {
        let r = http
            .get(format!("{}/api/realtime/events?access_token={t}", gw.base()))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        drop(r);
        let _ = http
            .get(format!("{}/api/realtime/status?access_token={t}", gw.base()))
            .send()
            .await;
        // The WebSocket: in the URL, and in the first message.
        let ws = format!("ws://127.0.0.1:{}/api/realtime/ws", gw.port);
        drop(tokio_tungstenite::connect_async(format!("{ws}?access_token={t}")).await);
        if let Ok((mut s, _)) = tokio_tungstenite::connect_async(ws).await {
            use futures::{SinkExt, StreamExt};
            let auth = json!({"op": "auth", "token": t}).to_string();
            let _ = s.send(tokio_tungstenite::tungstenite::Message::Text(auth.into())).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), s.next()).await;
        }
    }
    let log = gw.log_text();
    assert!(!log.is_empty());
    let signature = good.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token reached the log:\n{log}");
}

#[tokio::test]
async fn publishing_needs_the_role_or_a_service_key_stays_in_its_channels_and_is_rate_limited() {
    const KEY: &str = "svc-key-for-the-node-producers-0001";
    let gw = Gateway::start(|c| {
        c.auth.mode = AuthMode::Jwt;
        c.auth.hs256_secret = Some(SECRET.into());
        c.auth.service_keys.insert("node".into(), KEY.into());
        c.auth.publish_rate_per_sec = 5.0;
        c.auth.publish_burst = 1000.0;
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/realtime/publish", gw.base);
    let event = |ch: &str, ty: &str| json!({"channel": ch, "type": ty, "payload": {"id": "x", "action": "updated"}});
    let orders_only = token(json!({"sub": "p1", "exp": now() + 600, "channels": ["orders"], "role": "publisher"}));
    let (s, b) = status_of(
        http.post(&url)
            .bearer_auth(&orders_only)
            .json(&event("pricing", "PRICE_CHANGE")),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden_channel")), "{b}");
    let (s, b) = status_of(
        http.post(&url)
            .header("x-service-key", "wrong-key-wrong-key-wrong-key-wrong")
            .json(&event("orders", "ORDER_RECEIVED")),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_token")), "{b}");
    // The largest batch fits the burst; the next event waits.
    let batch: Vec<Value> = (0..1000).map(|_| event("orders", "ORDER_RECEIVED")).collect();
    let (s, b) = status_of(http.post(&url).header("x-service-key", KEY).json(&batch)).await;
    assert_eq!(s, 200, "{b}");
    let r = http
        .post(&url)
        .header("x-service-key", KEY)
        .json(&event("orders", "ORDER_RECEIVED"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "rate_limited", "{b}");
    // Another caller has its own bucket.
    let (s, b) = status_of(
        http.post(&url)
            .bearer_auth(&orders_only)
            .json(&event("orders", "ORDER_RECEIVED")),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// A stream URL carries a ticket, not the token: the ticket opens streams (SSE and WebSocket)
/// for its caller's channels only, is no token anywhere else, and a forged one opens nothing.
#[tokio::test]
async fn stream_tickets_open_streams_and_nothing_else() {
    let gw = jwt_gateway().await;
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token(claims("u1", json!(["orders"]), None)));
    let r = http
        .post(format!("{}/api/realtime/ticket", gw.base))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    assert_eq!(v["expires_in"], 30);
    // Without a token, no ticket.
    let (s, body) = status_of(http.post(format!("{}/api/realtime/ticket", gw.base))).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("missing_token")));

    let mut s = gw
        .open(&format!("?channels=orders&notifications=false&ticket={ticket}"), None)
        .await;
    let id = gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "o-1").await;
    assert_eq!(common::next_env(&mut s).await.1.id, id);
    // The caller's grants hold.
    let (s, body) = status_of(http.get(format!(
        "{}/api/realtime/events?channels=pricing&ticket={ticket}",
        gw.base
    )))
    .await;
    assert_eq!((s, body["code"].as_str()), (403, Some("forbidden_channel")));
    // A ticket is not a token, and a forged one is refused.
    let (s, _) = status_of(
        http.get(format!("{}/api/realtime/status", gw.base))
            .header("authorization", format!("Bearer {ticket}")),
    )
    .await;
    assert_eq!(s, 401);
    let forged = token(json!({"typ": "stream-ticket", "sub": "u1", "use_by": now() + 30}));
    let (s, body) = status_of(http.get(format!("{}/api/realtime/events?ticket={forged}", gw.base))).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("invalid_token")));
    // A WebSocket opens with it too.
    let url = format!(
        "{}/api/realtime/ws?channels=orders&notifications=false&ticket={ticket}",
        gw.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let id = gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "o-2").await;
    use futures::StreamExt;
    let frame = tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
    let m: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(m["data"]["id"], json!(id.to_string()), "{m}");
}
