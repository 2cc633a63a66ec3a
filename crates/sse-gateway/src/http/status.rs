//! Health, readiness, status, the admin list of connections, and the metrics.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    Json,
};
use event_bus::{AnyBus, Timestamp};
use serde_json::{json, Value};

use crate::{app::AppState, error::ApiError};

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

/// `GET /api/openapi.json`: the OpenAPI 3.1 document ([`crate::openapi`]).
pub async fn openapi(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        state.openapi(),
    )
        .into_response()
}
