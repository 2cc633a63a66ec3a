//! The handlers at the router level: `app(state).oneshot(request)`, no socket and no process
//! (the end-to-end tests next to this one cover what crosses a socket).

use axum::{
    body::Body,
    http::{Request, StatusCode},
    Router,
};
use event_bus::{AnyBus, Broker, BusConfig, Channel, EventId, MemoryBus};
use serde_json::{json, Value};
use sse_gateway::{auth::AuthMode, AppState, GatewayConfig};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const SECRET: &str = "a-router-test-secret-of-32-characters";

async fn gateway(mode: AuthMode) -> (Router, AnyBus, AppState) {
    gateway_with(mode, |_| {}).await
}

async fn gateway_with(mode: AuthMode, tweak: impl FnOnce(&mut GatewayConfig)) -> (Router, AnyBus, AppState) {
    let mut config = GatewayConfig {
        instance_id: "router-test".into(),
        max_body_bytes: 4096,
        ..Default::default()
    };
    config.auth.mode = mode;
    tweak(&mut config);
    if mode == AuthMode::Jwt {
        config.auth.hs256_secret = Some(SECRET.into());
    }
    config.validate().unwrap();
    let bus = AnyBus::Memory(MemoryBus::new(config.bus_config()).unwrap());
    let state = AppState::start(config, bus.clone(), CancellationToken::new())
        .await
        .unwrap();
    (sse_gateway::app(state.clone()), bus, state)
}

/// Status and JSON body (`Value::Null` for a body that is not JSON).
async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn health_readiness_and_status() {
    let (app, _, state) = gateway(AuthMode::None).await;
    let res = app.clone().oneshot(get("/healthz")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        call(&app, get("/readyz")).await,
        (StatusCode::OK, json!({"ready": true}))
    );
    let (s, status) = call(&app, get("/api/realtime/status")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (status["redis"].as_str(), status["instance"].as_str()),
        (Some("memory"), Some("router-test"))
    );
    assert_eq!(status["draining"], false);
    state.draining().cancel();
    let (s, body) = call(&app, get("/readyz")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );
    let (s, body) = call(&app, get("/api/realtime/events")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining")),
        "no stream opens while draining"
    );
}

#[tokio::test]
async fn publishing_stores_and_bad_bodies_say_why() {
    let (app, bus, _) = gateway(AuthMode::None).await;
    let event = json!({"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "ord_1", "action": "created"}});
    let (s, body) = call(&app, post("/api/realtime/publish", event.to_string())).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let id: EventId = body["id"].as_str().unwrap().parse().unwrap();
    let stored = bus.replay(&Channel::ORDERS, EventId::ZERO, 10).await.unwrap().events;
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
    for (body, status, code) in [
        ("{not json".to_owned(), StatusCode::BAD_REQUEST, "bad_json"),
        ("[]".to_owned(), StatusCode::BAD_REQUEST, "bad_batch"),
        (
            json!({"channel": "orders"}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_event",
        ),
        (
            json!({"channel": "nope", "type": "X", "payload": {"id": "1", "action": "created"}}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown_channel",
        ),
        (
            json!({"channel": "notifications", "type": "NOTIFICATION", "payload": {"id": "1", "action": "created"}})
                .to_string(),
            StatusCode::FORBIDDEN,
            "private_channel",
        ),
        ("x".repeat(5000), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        (
            json!({"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "i".repeat(257), "action": "created"}})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "bad_payload_id",
        ),
    ] {
        let (s, answer) = call(&app, post("/api/realtime/publish", body)).await;
        assert_eq!((s, answer["code"].as_str()), (status, Some(code)), "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        bus.replay(&Channel::ORDERS, EventId::ZERO, 10)
            .await
            .unwrap()
            .events
            .len(),
        1
    );
}

#[tokio::test]
async fn streams_are_checked_before_they_open() {
    let (app, _, _) = gateway(AuthMode::None).await;
    for (query, status, code) in [
        ("channels=nope", StatusCode::BAD_REQUEST, "unknown_channel"),
        ("types=bad%20type", StatusCode::BAD_REQUEST, "bad_type"),
        ("named=maybe", StatusCode::BAD_REQUEST, "bad_named"),
        ("last_event_id=garbage", StatusCode::BAD_REQUEST, "bad_cursor"),
    ] {
        let (s, body) = call(&app, get(&format!("/api/realtime/events?{query}"))).await;
        assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{query}: {body}");
    }
    let res = app
        .clone()
        .oneshot(get("/api/realtime/events?channels=orders"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
}

#[tokio::test]
async fn tokens_roles_and_dev_tokens() {
    let (app, _, state) = gateway(AuthMode::Jwt).await;
    let (s, body) = call(&app, get("/api/notifications")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );
    let (s, _) = call(&app, get("/api/dev/token")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "tokens are handed out only in dev mode");
    assert_eq!(call(&app, get("/healthz")).await.0, StatusCode::OK, "open path");
    let (s, body) = call(&app, get("/api/realtime/status?access_token=not.a.jwt")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    drop(state);

    let (app, _, _) = gateway(AuthMode::Dev).await;
    let (s, body) = call(&app, get("/api/dev/token?sub=alice&role=none&channels=orders")).await;
    assert_eq!(s, StatusCode::OK);
    let token = body["token"].as_str().unwrap().to_owned();
    let with = |req: Request<Body>| {
        let (mut parts, body) = req.into_parts();
        parts
            .headers
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        Request::from_parts(parts, body)
    };
    let (s, body) = call(&app, with(get("/api/realtime/connections"))).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden_role"))
    );
    let (s, page) = call(&app, with(get("/api/notifications"))).await;
    assert_eq!(
        (s, page["user_id"].as_str(), page["total"].as_u64()),
        (StatusCode::OK, Some("alice"), Some(0))
    );
    let (s, body) = call(&app, with(get("/api/realtime/events?channels=pricing"))).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden_channel"))
    );
    // The statistics count every channel's events: not for a token granted only orders.
    for path in [
        "/api/realtime/stats",
        "/api/realtime/stats/range?from=2026-01-01&to=2026-01-02",
    ] {
        let (s, body) = call(&app, with(get(path))).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden_channel")),
            "{path}"
        );
    }
    let (_, body) = call(&app, get("/api/dev/token?sub=bob&role=none&channels=*")).await;
    let all = format!("Bearer {}", body["token"].as_str().unwrap());
    let with_all = |req: Request<Body>| {
        let (mut parts, body) = req.into_parts();
        parts.headers.insert("authorization", all.parse().unwrap());
        Request::from_parts(parts, body)
    };
    let (s, body) = call(&app, with_all(get("/api/realtime/stats?date=2026-13-01"))).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_date"))
    );
    let (s, body) = call(&app, with_all(get("/api/realtime/stats"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["total"]["instances"], 1);
}

#[test]
fn the_bus_config_carries_the_private_channel() {
    let c = GatewayConfig::default().bus_config();
    assert!(c.channels.iter().any(|s| s.name.as_str() == "notifications"));
    assert_eq!(BusConfig::default().channels.len() + 1, c.channels.len());
}

/// An HS256 token for `claims`, signed with the test gateway's secret.
fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Whether `orders` is still empty.
async fn nothing_published(bus: &event_bus::AnyBus) -> bool {
    let page = bus.replay(&Channel::ORDERS, EventId::ZERO, 10).await.unwrap();
    page.events.is_empty()
}

#[tokio::test]
async fn an_open_path_without_a_token_is_nobody_not_the_admin() {
    let (app, bus, _) = gateway_with(AuthMode::Jwt, |c| {
        c.auth.open_paths.push("/api/realtime/publish".into());
        c.auth.open_paths.push("/api/notifications".into());
    })
    .await;
    let event = json!({"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "o", "action": "created"}});
    let (s, body) = call(&app, post("/api/realtime/publish", event.to_string())).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );
    assert!(nothing_published(&bus).await);
    let (s, body) = call(&app, get("/api/notifications")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );
    // With a token, an open path still knows its caller.
    let t = token(json!({"sub": "svc", "exp": 4_000_000_000u64, "role": "publisher", "channels": "*"}));
    let mut req = post("/api/realtime/publish", event.to_string());
    req.headers_mut()
        .insert("authorization", format!("Bearer {t}").parse().unwrap());
    assert_eq!(call(&app, req).await.0, StatusCode::OK);
}

/// An open path waives the need for a token and nothing else: the role a path needs and the
/// cookie's cross-site check still hold there.
#[tokio::test]
async fn an_open_path_waives_only_the_token() {
    let admin_paths = [
        "/api/realtime/connections",
        "/api/realtime/test",
        "/api/sinks/destinations",
    ];
    let (app, bus, _) = gateway_with(AuthMode::Jwt, |c| {
        c.auth.open_paths.push("/api/realtime/publish".into());
        c.auth.open_paths.extend(admin_paths.map(String::from));
    })
    .await;
    let bearer = |mut req: axum::http::Request<axum::body::Body>, t: &str| {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        req
    };
    let event = json!({"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "o", "action": "created"}});
    let reader = token(json!({"sub": "bob", "exp": 4_000_000_000u64, "channels": "*"}));
    // A caller without the publisher role cannot publish on an open publish path.
    let (s, body) = call(&app, bearer(post("/api/realtime/publish", event.to_string()), &reader)).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden_role"))
    );
    // Nor can a cookie from another site, even with the role.
    let publisher = token(json!({"sub": "svc", "exp": 4_000_000_000u64, "role": "publisher", "channels": "*"}));
    let mut req = post("/api/realtime/publish", event.to_string());
    req.headers_mut()
        .insert("cookie", format!("rakuda_token={publisher}").parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let (s, body) = call(&app, req).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("origin_not_allowed"))
    );
    assert!(nothing_published(&bus).await);
    // The admin's paths, opened, still need the admin: nobody and a reader are refused.
    for path in admin_paths {
        let req = || {
            if path == "/api/realtime/test" {
                post(path, "{}")
            } else {
                get(path)
            }
        };
        let (s, body) = call(&app, req()).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("missing_token")),
            "{path}"
        );
        let (s, body) = call(&app, bearer(req(), &reader)).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden_role")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_token_that_never_expires_opens_a_stream() {
    let (app, _, _) = gateway(AuthMode::Jwt).await;
    let t = token(json!({"sub": "alice", "exp": u64::MAX, "channels": "*"}));
    let res = app
        .clone()
        .oneshot(get(&format!("/api/realtime/events?channels=orders&access_token={t}")))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "an exp past what an Instant holds is no expiry"
    );
}

#[tokio::test]
async fn behind_a_proxy_the_client_is_the_address_it_appended() {
    let (app, _, _) = gateway_with(AuthMode::None, |c| {
        c.trust_forwarded_for = true;
        c.max_connections_per_client = 1;
    })
    .await;
    let open = |xff: &str| {
        let mut req = get("/api/realtime/events?channels=orders");
        req.headers_mut().insert("x-forwarded-for", xff.parse().unwrap());
        app.clone().oneshot(req)
    };
    // nginx appends the address it saw (`$proxy_add_x_forwarded_for`); the rest is the client's.
    let first = open("1.1.1.1, 203.0.113.7").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let spoofed = open("2.2.2.2, 203.0.113.7").await.unwrap();
    assert_eq!(
        spoofed.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a client that writes its own X-Forwarded-For is still the address the proxy saw"
    );
    let other = open("1.1.1.1, 198.51.100.9").await.unwrap();
    assert_eq!(other.status(), StatusCode::OK, "another address is another client");
    drop(first);
}

/// What schemathesis found against the OpenAPI document (`tests/tests/openapi.rs`), each kept
/// here at the router: every refusal is JSON with a code, and `?access_token=` is a token
/// wherever the reference says a token goes.
#[tokio::test]
async fn every_refusal_is_json_and_the_query_token_works_everywhere() {
    let (app, _, _) = gateway(AuthMode::Dev).await;
    let (_, t) = call(&app, get("/api/dev/token")).await;
    let t = t["token"].as_str().unwrap().to_owned();
    // The statistics took `access_token` for an unknown field (400 invalid_query).
    let (s, body) = call(&app, get(&format!("/api/realtime/stats?access_token={t}"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = call(
        &app,
        get(&format!(
            "/api/realtime/stats/range?from=2026-11-01&to=2026-11-02&access_token={t}"
        )),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = call(
        &app,
        get(&format!("/api/realtime/stats?date=1969-12-31&access_token={t}")),
    )
    .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_date")),
        "{body}"
    );
    // axum's own rejections were text.
    let bearer = |r: Request<Body>| {
        let (mut parts, body) = r.into_parts();
        parts
            .headers
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        Request::from_parts(parts, body)
    };
    let cases = [
        (
            get("/api/realtime/events?named=1&named=0"),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            bearer(get("/api/realtime/ws")),
            StatusCode::BAD_REQUEST,
            "not_websocket",
        ),
        (
            bearer(post("/api/notifications/%FF/read", "")),
            StatusCode::BAD_REQUEST,
            "bad_id",
        ),
        (get("/no/such/path"), StatusCode::NOT_FOUND, "not_found"),
        (
            Request::delete("/healthz").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            get("/api/dev/token?channels=orders,,pricing"),
            StatusCode::BAD_REQUEST,
            "unknown_channel",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (s, body) = call(&app, bearer(req)).await;
        assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{what}: {body}");
    }
    // `before=` (empty) is the first page, not an unknown notification.
    let (s, body) = call(&app, bearer(get("/api/notifications?before="))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // The document is open, and names this gateway's channels.
    let (s, doc) = call(&app, get("/api/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    let channels: Vec<&str> = doc["components"]["schemas"]["test-request"]["properties"]["channel"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        channels.contains(&"orders") && !channels.contains(&"notifications"),
        "{channels:?}"
    );
}
