//! The other endpoints of CONTRACT §4.

use axum::{
    body::Bytes,
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use event_bus::{Action, AnyBus, Bus, Channel, EventType, NewEvent, Payload, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{error::ApiError, AppState};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: ready while the upstream subscription works and the process is not draining.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.draining().is_cancelled() {
        return Err(ApiError::unavailable("draining", "shutting down", 1));
    }
    match state.hub().upstream() {
        event_bus::Health::Up => Ok(Json(json!({"ready": true}))),
        event_bus::Health::Down { reason, .. } => Err(ApiError::unavailable(
            "upstream_down",
            format!("the upstream subscription is down: {reason}"),
            2,
        )),
    }
}

/// `GET /api/realtime/status`.
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let up = state.hub().upstream().is_up();
    let redis = match state.bus() {
        AnyBus::Memory(_) => "memory",
        AnyBus::Redis(_) if up => "up",
        AnyBus::Redis(_) => "down",
    };
    Json(json!({
        "connected": up,
        "redis": redis,
        "instance": state.config().instance_id,
        "connections": state.hub().connections(),
        "enabled": state.config().realtime_enabled,
        "draining": state.draining().is_cancelled(),
        "timestamp": Timestamp::now(),
    }))
}

/// `GET /api/realtime/connections` (admin): this instance's open streams.
pub async fn connections(State(state): State<AppState>) -> Json<Value> {
    let list = state.hub().connection_infos();
    Json(json!({
        "instance": state.config().instance_id,
        "count": list.len(),
        "connections": list.iter().map(|c| serde_json::to_value(&**c).unwrap_or(Value::Null)).collect::<Vec<_>>(),
    }))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics().render(),
    )
        .into_response()
}

/// One event in a publish request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishItem {
    channel: String,
    #[serde(rename = "type")]
    event_type: String,
    payload: Payload,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
}

impl PublishItem {
    /// `at` prefixes error messages: "" for a single event, "item N: " in an array.
    fn into_event(self, at: &str) -> Result<(Channel, NewEvent), ApiError> {
        let channel =
            Channel::new(self.channel).map_err(|e| ApiError::bad_request("unknown_channel", format!("{at}{e}")))?;
        let event_type =
            EventType::new(self.event_type).map_err(|e| ApiError::bad_request("bad_type", format!("{at}{e}")))?;
        Ok((
            channel,
            NewEvent {
                event_type,
                payload: self.payload,
                timestamp: self.timestamp.unwrap_or_else(Timestamp::now),
                idempotency_key: self.idempotency_key,
            },
        ))
    }
}

/// Reads a request body of at most `max_body_bytes`; a longer one is refused (413, JSON) as
/// soon as the limit is passed, without reading the rest.
pub(crate) async fn read_body(state: &AppState, body: axum::body::Body) -> Result<Bytes, ApiError> {
    let max = state.config().max_body_bytes;
    axum::body::to_bytes(body, max).await.map_err(|_| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "body_too_large",
        message: format!("the request body is larger than {max} bytes"),
        retry_after: None,
    })
}

/// `POST /api/realtime/publish`: one event or an array; answers `{"id"}` or a list of them.
pub async fn publish(
    State(state): State<AppState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let principal = principal
        .map(|p| p.0)
        .unwrap_or_else(crate::auth::Principal::development);
    let body = read_body(&state, body).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the body is not JSON: {e}")))?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        other => (vec![other], true),
    };
    if items.is_empty() || items.len() > 1000 {
        return Err(ApiError::bad_request("bad_batch", "send 1 to 1000 events"));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = if single { String::new() } else { format!("item {i}: ") };
        let item: PublishItem = serde_json::from_value(item).map_err(|e| {
            ApiError::bad_request(
                "bad_event",
                format!("{at}{e} (expected {{\"channel\", \"type\", \"payload\": {{\"id\", \"action\", \"data\"?}}, \"idempotency_key\"?}})"),
            )
        })?;
        events.push(item.into_event(&at)?);
    }
    if let Some(n) = state.notifications() {
        if events.iter().any(|(c, _)| c == &n.config().channel) {
            return Err(ApiError::forbidden(
                "private_channel",
                format!(
                    "{} is the per-user notification channel: create notifications with POST /api/notifications",
                    n.config().channel
                ),
            ));
        }
    }
    let refused: Vec<&str> = events
        .iter()
        .filter(|(c, _)| !principal.allows(c))
        .map(|(c, _)| c.as_str())
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::forbidden(
            "forbidden_channel",
            format!("the token does not grant publishing to: {}", refused.join(", ")),
        ));
    }
    // Per caller: the user or service; in AUTH_MODE=none, the client's address.
    let caller = if state.auth().mode().uses_tokens() {
        principal.sub.clone()
    } else {
        peer.map(|p| p.0 .0.ip().to_string()).unwrap_or_default()
    };
    if let Err(wait) = state.publish_limiter().take(&caller, events.len() as f64) {
        return Err(rate_limited(&state, events.len(), wait));
    }
    if !state.config().realtime_enabled {
        return Ok((StatusCode::ACCEPTED, Json(json!({"disabled": true, "published": 0}))).into_response());
    }
    let published = state.bus().publish_batch(events).await.map_err(ApiError::from_bus)?;
    let answer = |p: &event_bus::Published| json!({"id": p.id, "duplicate": p.duplicate});
    Ok(if single {
        Json(answer(&published[0])).into_response()
    } else {
        Json(Value::Array(published.iter().map(answer).collect())).into_response()
    })
}

/// 429 for a caller past its publishing rate: `n` events now, enough in `wait` seconds.
pub(crate) fn rate_limited(state: &AppState, n: usize, wait: u64) -> ApiError {
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "rate_limited",
        message: format!(
            "{n} events at once is more than this caller may publish now ({} per second); retry in {wait} s",
            state.config().auth.publish_rate_per_sec
        ),
        retry_after: Some(wait),
    }
}

/// Body of `POST /api/realtime/test` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    channel: Option<String>,
    message: Option<String>,
}

/// `POST /api/realtime/test` (admin): publishes a test event on a channel (default: the first).
pub async fn test_event(State(state): State<AppState>, body: axum::body::Body) -> Result<Response, ApiError> {
    let body = read_body(&state, body).await?;
    let req: TestRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TestRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("bad_json", format!("{e}")))?
    };
    let config = &state.config().bus;
    let spec = match &req.channel {
        None => &config.channels[0],
        Some(name) => config
            .channels
            .iter()
            .filter(|c| state.notifications().is_none_or(|n| n.config().channel != c.name))
            .find(|c| c.name.as_str() == name)
            .ok_or_else(|| ApiError::bad_request("unknown_channel", format!("unknown channel {name:?}")))?,
    };
    let event_type = spec
        .types
        .first()
        .cloned()
        .unwrap_or_else(|| EventType::new("TEST").expect("valid"));
    let n = state.next_test();
    let payload = Payload::new(format!("test-{n}"), Action::Updated)
        .with_data(json!({"test": true, "message": req.message.unwrap_or_else(|| "test event".into())}));
    let p = state
        .bus()
        .publish(&spec.name, NewEvent::new(event_type, payload))
        .await
        .map_err(ApiError::from_bus)?;
    Ok(Json(json!({"id": p.id, "channel": spec.name})).into_response())
}

/// Authentication of every API endpoint except the configured open paths (health, readiness,
/// metrics); the stream endpoint checks its own in `sse::open`. Roles: `admin` for connections
/// and test events, `publisher` (or `admin`) for publishing. The caller's [`Principal`] is put
/// into the request's extensions.
pub async fn require_auth(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if state.config().auth.open_paths.contains(&path) {
        return next.run(req).await;
    }
    let principal = match state.auth().authenticate(req.headers(), req.uri().query()) {
        Ok(p) => p,
        Err(e) => return ApiError::unauthorized(&e).into_response(),
    };
    let needs = match (req.method(), path.as_str()) {
        (_, "/api/realtime/connections" | "/api/realtime/test") => Some(("admin", principal.is_admin())),
        (_, "/api/realtime/publish") => Some(("publisher", principal.can_publish())),
        (&axum::http::Method::POST, "/api/notifications") => Some(("publisher", principal.can_publish())),
        _ => None,
    };
    if let Some((role, false)) = needs {
        return ApiError::forbidden("forbidden_role", format!("this needs the {role} role in the token"))
            .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Per-caller token buckets for publishing: `rate` events per second sustained, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl RateLimiter {
    /// A limiter of `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            buckets: Default::default(),
        }
    }

    /// Takes `n` from `key`'s bucket, or says in how many seconds there will be enough.
    pub fn take(&self, key: &str, n: f64) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let mut b = self.buckets.lock().unwrap();
        if b.len() > 10_000 {
            b.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 60);
        }
        let (tokens, at) = b.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if n <= *tokens {
            *tokens -= n;
            Ok(())
        } else {
            Err(((n - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// Query of `GET /api/dev/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenQuery {
    sub: Option<String>,
    role: Option<String>,
    channels: Option<String>,
    ttl: Option<u64>,
}

/// `GET /api/dev/token?sub=dev&role=admin&channels=*&ttl=43200` (`AUTH_MODE=dev` only, 404
/// otherwise): a signed token for whoever asks, so the dashboard and a developer's scripts use
/// the same authenticated paths as production.
pub async fn dev_token(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<DevTokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    if state.auth().mode() != crate::auth::AuthMode::Dev {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_dev_mode",
            message: "tokens are handed out only with AUTH_MODE=dev".into(),
            retry_after: None,
        });
    }
    let axum::extract::Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let sub = q.sub.unwrap_or_else(|| "dev".into());
    notifications::check_user(&sub).map_err(|e| ApiError::bad_request("bad_user", e))?;
    let role = match q.role.as_deref() {
        None => Some("admin"),
        Some("admin") => Some("admin"),
        Some("publisher") => Some("publisher"),
        Some("" | "none") => None,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_role",
                format!("role={other:?}: admin, publisher or none"),
            ))
        }
    };
    let channels = match q.channels.as_deref() {
        None | Some("*") => json!("*"),
        Some(list) => {
            let mut out = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                Channel::new(name).map_err(|e| ApiError::bad_request("unknown_channel", e.to_string()))?;
                out.push(name.to_owned());
            }
            json!(out)
        }
    };
    let ttl = q.ttl.unwrap_or(12 * 3600);
    if !(10..=7 * 86_400).contains(&ttl) {
        return Err(ApiError::bad_request("bad_ttl", "ttl: 10 to 604800 seconds"));
    }
    let (token, exp) = state
        .auth()
        .mint(&sub, role, channels, ttl)
        .expect("dev mode has a minting key");
    Ok(Json(json!({"token": token, "expires_at": exp, "sub": sub})).into_response())
}
