//! `make run`'s outbound sinks: the sinks service in this process, routing the demo's events to
//! one destination of each kind that speaks HTTP (Slack, Discord, LINE, a signed webhook, Web
//! Push), all pointed at a receiver in this process (`/dev/sinks/in/<destination>`, and
//! `/dev/sinks/push/<id>` as the push service of subscriptions the page makes). The page at
//! `/dev/sinks` shows what each destination received, rendered as it would show it; for Web
//! Push the page is the browser: it subscribes with keys it made, decrypts each message
//! (RFC 8291) and checks its VAPID signature with WebCrypto.
//!
//! A real browser subscription cannot be pointed here: a browser chooses its own push service
//! (Chromium's is Google's), which this closed machine cannot reach; the page stands in for the
//! browser and this process for its push service, and the sinks cannot tell the difference.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use base64::Engine as _;
use serde_json::{json, Value};
use sse_gateway::GatewayConfig;

/// How many received requests are kept (the oldest go).
const KEPT: usize = 300;
/// The largest body recorded.
const MAX_BODY: usize = 64 * 1024;
/// A stock-out's message, as a person reads it on a phone at night.
const STOCKOUT: &str = "Out of stock: {payload.id} ({payload.data.price} {payload.data.currency})";

#[derive(Debug, Default)]
struct Log {
    seq: u64,
    items: VecDeque<Value>,
}

/// The development destinations: the sinks' configuration and what the receiver got.
#[derive(Clone, Debug)]
pub struct DevSinks {
    /// The sinks' configuration (destinations at this process' receiver).
    pub config: sinks::SinksConfig,
    log: Arc<Mutex<Log>>,
    meta: Arc<Value>,
}

fn destination(kind: &str, url: String, extra: Value) -> Value {
    let mut d = json!({"kind": kind, "url": url});
    if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    d
}

impl DevSinks {
    /// Destinations at `http://127.0.0.1:<port>/dev/sinks/...`, and the gateway set up for Web
    /// Push to them (a fresh VAPID key pair; the receiver as an allowed push service). A
    /// stock-out goes to Slack and Web Push at once, and to LINE after `escalate_after_ms` unless
    /// someone acknowledged it on a dashboard.
    pub fn prepare(gateway: &mut GatewayConfig, port: u16, escalate_after_ms: u64) -> anyhow::Result<DevSinks> {
        let base = format!("http://127.0.0.1:{port}/dev/sinks/in");
        let (private, public) = sinks::destination::web_push::new_keys();
        let mut secret = [0u8; 24];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret));
        let push_host = format!("http://127.0.0.1:{port}");
        gateway.notifications.push.public_key = public.clone();
        gateway.notifications.push.allowed_hosts.push(push_host.clone());
        let mut web_push = json!({"kind": "web_push", "users": ["dev"], "vapid_private_key": private,
            "contact": "mailto:dev@localhost", "ttl_secs": 3600, "urgency": "high"});
        web_push["allowed_hosts"] = json!([push_host]);
        let config = json!({
            "destinations": {
                "slack": destination("slack", format!("{base}/slack"), json!({})),
                "discord": destination("discord", format!("{base}/discord"), json!({})),
                "line": destination("line", format!("{base}/line"), json!({"token": "dev-line-token", "to": "Udev"})),
                "webhook": destination("webhook", format!("{base}/webhook"), json!({"secrets": [whsec]})),
                "push": web_push,
            },
            "routes": {
                "stockouts": {"channels": ["inventory"], "types": ["INVENTORY_CHANGE"],
                              "when": ["payload.data.isAvailable == false"], "destinations": ["slack", "push"],
                              "template": STOCKOUT},
                // LINE wakes people up: only when no one on a dashboard acknowledged the
                // stock-out within the window.
                "stockouts-unacknowledged": {"channels": ["inventory"], "types": ["INVENTORY_CHANGE"],
                              "when": ["payload.data.isAvailable == false"], "destinations": ["line"],
                              "template": STOCKOUT, "escalate_after_ms": escalate_after_ms,
                              "unless": "acknowledged"},
                "orders": {"channels": ["orders"], "types": ["ORDER_RECEIVED"], "destinations": ["webhook", "discord"]},
                "prices": {"channels": ["pricing"], "types": ["PRICE_CHANGE"], "digest_window_ms": 30000,
                           "destinations": ["slack", "discord"]},
            },
            "http_addr": "127.0.0.1:0",
            "instance_id": "make-run",
        });
        let mut config: sinks::SinksConfig = serde_json::from_value(config)?;
        config.bus = gateway.bus_config();
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("the development sinks: {e}"))?;
        let kinds: Vec<Value> = config
            .destinations
            .iter()
            .map(|(name, d)| json!({"name": name, "kind": d.kind().kind()}))
            .collect();
        let meta = json!({"destinations": kinds, "webhook_secret": whsec, "vapid_public_key": public,
            "push_endpoint_base": format!("http://127.0.0.1:{port}/dev/sinks/push/")});
        Ok(DevSinks {
            config,
            log: Arc::default(),
            meta: Arc::new(meta),
        })
    }

    fn record(&self, destination: &str, headers: &HeaderMap, target: String, body: &[u8], push: bool) -> u64 {
        let wanted = [
            "content-type",
            "authorization",
            "ttl",
            "urgency",
            "topic",
            "content-encoding",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "x-line-retry-key",
        ];
        let headers: serde_json::Map<String, Value> = wanted
            .iter()
            .filter_map(|k| {
                headers
                    .get(*k)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| (k.to_string(), json!(v)))
            })
            .collect();
        let body = &body[..body.len().min(MAX_BODY)];
        let body = if push {
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body))
        } else {
            json!(String::from_utf8_lossy(body))
        };
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.seq += 1;
        let n = log.seq;
        log.items
            .push_back(json!({"n": n, "destination": destination, "target": target,
            "at": event_bus::Timestamp::now_ms(), "headers": headers, "body": body}));
        if log.items.len() > KEPT {
            log.items.pop_front();
        }
        n
    }

    /// The receiver and the page, under `/dev/sinks`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/dev/sinks",
                get(|| async { page("text/html; charset=utf-8", include_str!("dev_sinks/page.html")) }),
            )
            .route(
                "/dev/sinks/page.js",
                get(|| async { page("text/javascript; charset=utf-8", include_str!("dev_sinks/page.js")) }),
            )
            .route("/dev/sinks/received", get(received))
            .route("/dev/sinks/in/{destination}", post(take_in))
            .route("/dev/sinks/push/{id}", post(take_push))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[derive(Debug, serde::Deserialize)]
struct After {
    after: Option<u64>,
}

async fn received(State(s): State<DevSinks>, Query(q): Query<After>) -> Json<Value> {
    let after = q.after.unwrap_or(0);
    let log = s.log.lock().unwrap_or_else(|p| p.into_inner());
    let items: Vec<&Value> = log.items.iter().filter(|v| v["n"].as_u64() > Some(after)).collect();
    Json(json!({"meta": *s.meta, "received": items}))
}

async fn take_in(
    State(s): State<DevSinks>,
    Path(destination): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    s.record(&destination, &headers, uri.to_string(), &body, false);
    // Each provider's answer to a good request.
    match destination.as_str() {
        "slack" => (StatusCode::OK, "ok").into_response(),
        "discord" => (StatusCode::OK, Json(json!({"id": "1", "type": 0}))).into_response(),
        "line" => (StatusCode::OK, Json(json!({"sentMessages": [{"id": "1"}]}))).into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn take_push(
    State(s): State<DevSinks>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    s.record("push", &headers, format!("/dev/sinks/push/{id}"), &body, true);
    // A push service's answer: created, with where the message is.
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/dev/sinks/push/{id}/m"))],
    )
}
