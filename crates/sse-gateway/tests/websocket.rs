//! `GET /api/realtime/ws` with a real WebSocket client (tokio-tungstenite) against real gateway
//! processes on a real redis-server: resume after kill -9 with nothing lost, mark_read over
//! the socket clearing the user's SSE device, bad frames answered without losing the socket,
//! a 1 MiB message refused, the token's expiry and the drain as close codes.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use event_bus::{Action, Broker, Channel, EventType, NewEvent, Payload, RedisBus};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::{process::Service, schemas::Schemas, sse::SseStream, RedisServer};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream, WebSocketStream,
};

const SECRET: &str = "websocket-test-secret-at-least-32-chars";
const T: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn token(sub: &str, role: Option<&str>, ttl: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + ttl;
    let mut claims = json!({"sub": sub, "exp": exp, "channels": ["orders", "inventory"]});
    if let Some(r) = role {
        claims["role"] = json!(r);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn env(redis: &RedisServer) -> HashMap<String, String> {
    [
        ("REDIS_URL", redis.url()),
        ("AUTH_MODE", "jwt".into()),
        ("JWT_HS256_SECRET", SECRET.into()),
        ("SSE_DEBOUNCE_WINDOW", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn gateway(redis: &RedisServer, port: Option<u16>) -> Service {
    let bin = Path::new(env!("CARGO_BIN_EXE_sse-gateway"));
    match port {
        Some(p) => Service::start_on(bin, &env(redis), p).unwrap(),
        None => Service::start(bin, &env(redis)).unwrap(),
    }
}

async fn connect(gw: &Service, query: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/api/realtime/ws?{query}", gw.port);
    connect_async(url).await.expect("websocket handshake").0
}

/// The next text message as JSON (panics on a close or after `T`).
async fn next(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("a message within 10 s") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the socket closes; the close code.
async fn close_code(ws: &mut Ws, limit: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn bus(redis: &RedisServer) -> RedisBus {
    testkit::bus::redis_bus(redis).await
}

async fn order(bus: &RedisBus, i: usize) {
    bus.publish(
        &Channel::ORDERS,
        NewEvent::new(
            EventType::ORDER_RECEIVED,
            Payload::new(format!("o{i}"), Action::Created),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_after_kill_9_loses_nothing_and_the_drain_says_reconnect() {
    let redis = RedisServer::start().unwrap();
    let schemas = Schemas::load();
    let mut gw = gateway(&redis, None);
    let port = gw.port;
    let bus = bus(&redis).await;
    let t = token("alice", None, 600);
    let mut ws = connect(&gw, &format!("access_token={t}&channels=orders&notifications=false")).await;
    // Subscribed from the URL; a ping shows the socket is ready before anything is published.
    send(&mut ws, json!({"op": "ping", "id": 1})).await;
    assert_eq!(next(&mut ws).await, json!({"op": "pong", "id": 1}));
    for i in 0..20 {
        order(&bus, i).await;
    }
    let mut got = Vec::new();
    let mut cursor = None;
    while got.len() < 20 {
        let m = next(&mut ws).await;
        schemas.assert_valid("ws-server.schema.json", &m);
        assert_eq!(m["op"], "message", "{m}");
        got.push(m["data"]["payload"]["id"].as_str().unwrap().to_owned());
        cursor = m["cursor"].as_str().map(str::to_owned);
    }
    // kill -9: no goodbye. Thirty more are published while it is down.
    gw.kill9();
    assert_eq!(
        close_code(&mut ws, T).await,
        None,
        "a killed gateway sends no close frame"
    );
    for i in 20..50 {
        order(&bus, i).await;
    }
    let gw = gateway(&redis, Some(port));
    // Back: subscribe with the last cursor, as the JS client does.
    let mut ws = connect(&gw, &format!("access_token={t}&notifications=false&channels=inventory")).await;
    let sub = json!({"op": "subscribe", "id": "s1", "channels": ["orders"], "cursor": cursor.unwrap()});
    schemas.assert_valid("ws-client.schema.json", &sub);
    send(&mut ws, sub).await;
    let ack = next(&mut ws).await;
    schemas.assert_valid("ws-server.schema.json", &ack);
    assert_eq!(
        (ack["op"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("s1")),
        "{ack}"
    );
    assert_eq!(ack["channels"], json!(["orders"]));
    while got.len() < 50 {
        let m = next(&mut ws).await;
        assert_eq!(m["op"], "message", "{m}");
        got.push(m["data"]["payload"]["id"].as_str().unwrap().to_owned());
    }
    let want: Vec<String> = (0..50).map(|i| format!("o{i}")).collect();
    assert_eq!(got, want, "every order once, in order, across the kill");
    // SIGTERM: the session closes with 1012, "reconnect".
    gw.sigterm();
    assert_eq!(close_code(&mut ws, Duration::from_secs(30)).await, Some(1012));
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_read_over_the_socket_clears_the_users_sse_device() {
    let redis = RedisServer::start().unwrap();
    let schemas = Schemas::load();
    let gw = gateway(&redis, None);
    let http = reqwest::Client::new();
    let alice = token("alice", None, 600);
    let mut sse = SseStream::connect(
        &format!("{}/api/realtime/events?access_token={alice}&channels=orders", gw.base()),
        None,
    )
    .await
    .unwrap();
    assert!(sse.next_message(T).await.unwrap().data.contains("NOTIFICATION_UNREAD"));
    // No token in the URL: the first message authenticates.
    let mut ws = connect(&gw, "channels=orders").await;
    send(&mut ws, json!({"op": "auth", "id": "a", "token": alice})).await;
    let ack = next(&mut ws).await;
    assert_eq!(
        (ack["op"].as_str(), ack["authenticated"].as_bool()),
        (Some("ack"), Some(true)),
        "{ack}"
    );
    let snap = next(&mut ws).await;
    assert_eq!(snap["data"]["type"], "NOTIFICATION_UNREAD", "{snap}");
    let r = http
        .post(format!("{}/api/notifications", gw.base()))
        .bearer_auth(token("svc", Some("publisher"), 600))
        .json(&json!({"user_id": "alice", "title": "Out of stock: p1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let m = next(&mut ws).await;
    assert_eq!(m["data"]["type"], "NOTIFICATION");
    assert!(sse.next_message(T).await.unwrap().data.contains(&id));

    let cmd = json!({"op": "mark_read", "id": 2, "notification_id": id});
    schemas.assert_valid("ws-client.schema.json", &cmd);
    send(&mut ws, cmd).await;
    let sent = Instant::now();
    let m = sse
        .next_message(Duration::from_secs(1))
        .await
        .expect("the SSE device is open");
    let took = sent.elapsed();
    let read: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(read["type"], "NOTIFICATION_READ", "{read}");
    assert_eq!(read["payload"]["data"]["unread"], 0);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The socket gets its ack and the same NOTIFICATION_READ (order between them is free).
    let (a, b) = (next(&mut ws).await, next(&mut ws).await);
    let ack = if a["op"] == "ack" { a } else { b };
    assert_eq!(
        (ack["id"].as_u64(), ack["unread"].as_u64()),
        (Some(2), Some(0)),
        "{ack}"
    );
    // Another user's notification id: refused, the socket stays.
    let mut bob = connect(&gw, &format!("access_token={}", token("bob", None, 600))).await;
    next(&mut bob).await; // bob's snapshot
    send(&mut bob, json!({"op": "mark_read", "id": 3, "notification_id": id})).await;
    let e = next(&mut bob).await;
    schemas.assert_valid("ws-server.schema.json", &e);
    assert_eq!(
        (e["op"].as_str(), e["code"].as_str()),
        (Some("error"), Some("notification_not_found"))
    );
    send(&mut bob, json!({"op": "mark_all_read", "id": 4})).await;
    assert_eq!(next(&mut bob).await["marked"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_are_answered_and_the_socket_stays_a_1_mib_message_is_refused() {
    let redis = RedisServer::start().unwrap();
    let schemas = Schemas::load();
    let gw = gateway(&redis, None);
    let t = token("carol", None, 600);
    // A bad token in the URL is refused before the upgrade, like on every endpoint.
    let bad = connect_async(format!("ws://127.0.0.1:{}/api/realtime/ws?access_token={t}x", gw.port)).await;
    match bad {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let mut ws = connect(&gw, &format!("access_token={t}&channels=orders&notifications=false")).await;
    let cases = [
        (Message::Text("{not json".into()), "bad_command"),
        (Message::Text(r#"{"op":"fly","id":1}"#.into()), "bad_command"),
        (Message::Text(r#"{"op":"mark_read","id":2}"#.into()), "bad_command"),
        (Message::Binary(vec![1, 2, 3].into()), "binary_not_supported"),
        (
            Message::Text(r#"{"op":"subscribe","id":3,"channels":["pricing"]}"#.into()),
            "forbidden_channel",
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":4,"cursor":"!!"}"#.into()),
            "bad_cursor",
        ),
        (
            Message::Text(r#"{"op":"auth","id":5,"token":"x"}"#.into()),
            "already_authenticated",
        ),
    ];
    for (msg, code) in cases {
        ws.send(msg.clone()).await.unwrap();
        let e = next(&mut ws).await;
        schemas.assert_valid("ws-server.schema.json", &e);
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{msg:?}: {e}"
        );
    }
    // Still usable: it answers, and still streams.
    send(&mut ws, json!({"op": "ping", "id": "still"})).await;
    assert_eq!(next(&mut ws).await["op"], "pong");
    order(&bus(&redis).await, 1).await;
    assert_eq!(next(&mut ws).await["data"]["payload"]["id"], "o1");
    // 1 MiB: refused, the socket closed with 1009 (message too big).
    let huge = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(1 << 20));
    let _ = ws.send(Message::Text(huge.into())).await;
    let code = close_code(&mut ws, T).await;
    assert_eq!(code, Some(1009), "close code");
    let metrics = reqwest::get(format!("{}/metrics", gw.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "realtime_ws_sessions_total",
        "realtime_events_delivered_total{transport=\"ws\",type=\"ORDER_RECEIVED\"",
        "realtime_connections_total{transport=\"ws\"",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }

    // The first message must authenticate when the URL has no token.
    let mut anon = connect(&gw, "").await;
    send(&mut anon, json!({"op": "ping", "id": 1})).await;
    assert_eq!(next(&mut anon).await["code"], "auth_required");
    assert_eq!(close_code(&mut anon, T).await, Some(4003));

    // At the token's expiry: TOKEN_EXPIRED, then close 4001 ("refresh and reconnect").
    let short = token("carol", None, 2);
    let mut ws = connect(
        &gw,
        &format!("access_token={short}&channels=orders&notifications=false"),
    )
    .await;
    let m = next(&mut ws).await;
    assert_eq!(m["data"]["type"], "TOKEN_EXPIRED", "{m}");
    assert!(m.get("cursor").is_none());
    assert_eq!(close_code(&mut ws, T).await, Some(4001));
    let _ = CloseCode::from(4001);
}

/// The JS client's WebSocket mode on Node's `ws` package: across a kill -9 of its gateway it
/// reconnects by itself from its cursor and gets every event once.
#[tokio::test(flavor = "multi_thread")]
async fn the_js_client_on_node_ws_resumes_across_a_kill_9() {
    let redis = RedisServer::start().unwrap();
    let mut gw = gateway(&redis, None);
    let port = gw.port;
    let bus = bus(&redis).await;
    let t = token("dave", None, 600);
    let node = testkit::node::NodeScript::start("ws-client.mjs", &[&gw.base(), &t, "10"], &[]);
    let line = tokio::task::block_in_place(|| node.next(T)).expect("the client opened");
    assert_eq!(line, json!({"open": true}));
    let mut got = Vec::new();
    let mut closes = Vec::new();
    let mut take = |v: Value, got: &mut Vec<String>| {
        if let Some(id) = v["event"].as_str() {
            got.push(id.to_owned());
        } else if let Some(code) = v["close"].as_u64() {
            closes.push(code);
        }
    };
    for i in 0..5 {
        order(&bus, i).await;
    }
    while got.len() < 5 {
        let v = tokio::task::block_in_place(|| node.next(T)).expect("an event");
        take(v, &mut got);
    }
    gw.kill9();
    for i in 5..10 {
        order(&bus, i).await;
    }
    let _gw = gateway(&redis, Some(port));
    let pong = loop {
        let v = tokio::task::block_in_place(|| node.next(Duration::from_secs(30))).expect("the client carries on");
        if v.get("pong").is_some() {
            break v;
        }
        take(v, &mut got);
    };
    let want: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    assert_eq!(got, want, "every event once, in order");
    assert_eq!(closes.first(), Some(&1006), "the kill is an abnormal close: {closes:?}");
    assert_eq!(pong["pong"]["op"], "pong", "{pong}");
}
