//! The upgrade: what can be checked before it (a token that is there but bad is a 401, as on
//! every endpoint), then the socket's authentication: the URL's token, or an `auth` message
//! first.

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, Message, WebSocket, WebSocketUpgrade},
        ConnectInfo, Query, State,
    },
    http::HeaderMap,
    response::Response,
    Extension,
};
use serde_json::json;

use super::{
    command::{parse, Command},
    reply::{ack_body, close, send, send_error, CLOSE_UNAUTHORIZED},
    session::Session,
};
use crate::{
    app::AppState,
    auth::principal::{AuthError, Principal},
    error::ApiError,
    stream::open::accepting,
    transport::query::StreamQuery,
};

/// Largest message (and frame) a client may send.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long a session without a token in its URL waits for the `auth` message.
const AUTH_WAIT: Duration = Duration::from_secs(10);

/// `GET /api/realtime/ws`: checks what can be checked before the upgrade (a token that is
/// there but bad is a 401, as on every endpoint), then runs the session.
pub async fn upgrade(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    // A page of another site could open the socket with the token cookie and act as its user.
    let config = state.config();
    crate::auth::origin::permitted(&headers, &config.allowed_origins, config.trust_forwarded_for).map_err(
        |origin| {
            ApiError::forbidden(
                "origin_not_allowed",
                format!("a WebSocket from {origin} is refused: that origin is not in allowed_origins"),
            )
        },
    )?;
    accepting(&state)?;
    // The caller now, or (no token anywhere) from the `auth` message.
    let principal = match q.ticket.as_deref().filter(|t| !t.is_empty()) {
        Some(ticket) => Some(crate::transport::query::redeem(&state, ticket)?),
        None => match state.auth().authenticate(&headers, q.access_token.as_deref()) {
            Ok(p) => Some(p),
            Err(AuthError::Missing(_)) => None,
            Err(e) => return Err(ApiError::unauthorized(&e)),
        },
    };
    // Not an upgrade (a plain GET, a missing key...): JSON like every refusal, not axum's text.
    let upgrade = upgrade.map_err(|e| ApiError {
        status: e.status(),
        code: "not_websocket",
        message: format!("{}: open this endpoint as a WebSocket", e.body_text()),
        retry_after: None,
    })?;
    let peer = peer.map(|p| p.0 .0);
    state.metrics().ws_sessions_total.inc();
    // Small buffers: a socket lives for hours and mostly idles (tungstenite's defaults are
    // 128 KiB each way, which at 10k sockets is most of the process).
    Ok(upgrade
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(4 << 20)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| {
            let sessions = state.sessions().clone();
            sessions.track_future(async move {
                let active = state.metrics().ws_sessions_active.clone();
                active.inc();
                // Boxed: the wait for an `auth` message must not size the session's future, which
                // lives as long as the socket.
                let waiting = Box::pin(Waiting::new(socket, &state).authenticated(principal));
                let Some(principal) = waiting.await else {
                    active.dec();
                    return;
                };
                let (socket, principal) = principal;
                let notifications = q.notifications.clone();
                Box::new(Session::new(socket, state, headers, peer, principal, notifications))
                    .run(Box::new(q))
                    .await;
                active.dec();
            })
        }))
}

/// A socket before it is authenticated.
struct Waiting<'a> {
    socket: WebSocket,
    state: &'a AppState,
}

impl<'a> Waiting<'a> {
    fn new(socket: WebSocket, state: &'a AppState) -> Self {
        Waiting { socket, state }
    }

    /// The caller: the upgrade's, or the one the first message's token names (closed 4003
    /// otherwise).
    async fn authenticated(mut self, known: Option<Principal>) -> Option<(WebSocket, Principal)> {
        if let Some(p) = known {
            return Some((self.socket, p));
        }
        let first = tokio::time::timeout(AUTH_WAIT, self.socket.recv()).await;
        let Ok(Some(Ok(Message::Text(text)))) = first else {
            close(
                &mut self.socket,
                CLOSE_UNAUTHORIZED,
                "send {\"op\":\"auth\",\"token\":...} first",
            )
            .await;
            return None;
        };
        let (id, cmd) = parse(&text);
        let Ok(Command::Auth { token, .. }) = cmd else {
            send_error(
                &mut self.socket,
                id,
                "auth_required",
                "the first message must be {\"op\":\"auth\",\"token\":\"<jwt>\"}",
            )
            .await;
            close(&mut self.socket, CLOSE_UNAUTHORIZED, "not authenticated").await;
            return None;
        };
        match self.state.auth().verify(token.trim()) {
            Ok(p) => {
                send(&mut self.socket, ack_body(id, json!({"authenticated": true}))).await;
                Some((self.socket, p))
            }
            Err(e) => {
                send_error(&mut self.socket, id, e.code(), &e.to_string()).await;
                close(&mut self.socket, CLOSE_UNAUTHORIZED, "not authenticated").await;
                None
            }
        }
    }
}
