//! The router (`app(state)`), kept apart from serving so tests call it without a socket.

use axum::{
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
    Router,
};

use crate::{
    app::AppState,
    dashboard,
    error::ApiError,
    http::{acks, auth, notifications, presence, publish, push, sinks, stats, status},
    transport::{sse, ws},
};

/// The router: every endpoint of `docs/reference.md`, "Endpoints".
pub fn app(state: AppState) -> Router {
    app_with(state, false)
}

/// [`app`], telling the dashboard whether this process also serves `make run`'s development
/// pages (`/dev/sinks`): the page asks for nothing the process does not offer.
pub fn app_with(state: AppState, dev_pages: bool) -> Router {
    let max_body = state.config().max_body_bytes;
    let mut offers = Vec::new();
    if state.auth().mode() == crate::auth::config::AuthMode::Dev {
        offers.push("dev-tokens");
    }
    if dev_pages {
        offers.push("dev-sinks");
    }
    Router::new()
        .route("/api/realtime/ticket", post(auth::ticket))
        .route("/api/realtime/status", get(status::status))
        .route("/api/realtime/connections", get(status::connections))
        .route("/api/realtime/stats", get(stats::stats))
        .route("/api/realtime/stats/range", get(stats::range))
        .route("/api/realtime/publish", post(publish::publish))
        .route("/api/realtime/test", post(publish::test_event))
        .route(
            "/api/notifications",
            get(notifications::list).post(notifications::create),
        )
        .route("/api/notifications/read-all", post(notifications::read_all))
        .route("/api/notifications/{id}/read", post(notifications::read_one))
        .route("/api/presence", get(presence::presence))
        .route("/api/events/{id}/acks", get(acks::list).post(acks::record))
        .route("/api/push/key", get(push::key))
        .route("/api/push/subscriptions", get(push::list).post(push::subscribe))
        .route("/api/push/subscriptions/{id}", delete(push::unsubscribe))
        .route("/api/sinks/destinations", get(sinks::destinations))
        .route("/metrics", get(status::metrics))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth))
        .route("/api/dev/token", get(auth::dev_token))
        .route("/api/openapi.json", get(status::openapi))
        // The streams authenticate themselves (a ticket; for a WebSocket, maybe the first
        // message), as on the lean path.
        .route("/api/realtime/events", get(sse::events))
        .route("/api/realtime/ws", get(ws::upgrade))
        .merge(dashboard::routes(&offers.join(" ")))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Any other path: JSON like every refusal.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!("no endpoint at {} (the API: GET /api/openapi.json)", uri.path()),
        retry_after: None,
    }
}

/// A known path with another method (axum adds `Allow`).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{method} is not served at {}", uri.path()),
        retry_after: None,
    }
}
