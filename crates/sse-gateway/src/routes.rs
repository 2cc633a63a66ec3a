//! The router (`app(state)`), kept apart from serving so tests call it without a socket.

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post},
    Router,
};

use crate::{
    app::AppState,
    dashboard,
    http::{auth, notifications, publish, stats, status},
    transport::{sse, ws},
};

/// The router: every endpoint of `docs/reference.md`, "Endpoints".
pub fn app(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
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
        .route("/metrics", get(status::metrics))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth))
        .route("/api/dev/token", get(auth::dev_token))
        // The streams authenticate themselves (a ticket; for a WebSocket, maybe the first
        // message), as on the lean path.
        .route("/api/realtime/events", get(sse::events))
        .route("/api/realtime/ws", get(ws::upgrade))
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
