//! The upgrade: what can be checked before it (a token that is there but bad is a 401, as on
//! every endpoint), then the socket's authentication: the URL's token, or an `auth` message
//! first.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
    Extension,
};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
        Message,
    },
    WebSocketStream,
};

use super::{
    command::{parse, Command},
    reply::{ack_body, close, send, send_error, Socket, CLOSE_UNAUTHORIZED},
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

/// Not a WebSocket request: a 400 (or 426 when the connection cannot be upgraded) saying
/// what is missing, as JSON like every refusal.
fn not_websocket(status: StatusCode, what: &str) -> ApiError {
    ApiError {
        status,
        code: "not_websocket",
        message: format!("{what}: open this endpoint as a WebSocket"),
        retry_after: None,
    }
}

/// The handshake's answer to this request (RFC 6455, 4.2): its `Sec-WebSocket-Accept`.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let bad = |what| Err(not_websocket(StatusCode::BAD_REQUEST, what));
    if !has(header::CONNECTION, "upgrade") {
        return bad("the Connection header does not include 'upgrade'");
    }
    if !has(header::UPGRADE, "websocket") {
        return bad("the Upgrade header does not include 'websocket'");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return bad("the Sec-WebSocket-Version header is not '13'");
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        // Base64: always a valid header value.
        Some(key) => HeaderValue::try_from(derive_accept_key(key.as_bytes()))
            .or_else(|_| bad("the Sec-WebSocket-Key header is not valid")),
        None => bad("the Sec-WebSocket-Key header is missing"),
    }
}

/// `GET /api/realtime/ws`: checks what can be checked before the upgrade (a token that is
/// there but bad is a 401, as on every endpoint), then runs the session.
pub async fn upgrade(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    pending: Option<Extension<crate::limit::Pending>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    mut request: Request,
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
    // Not an upgrade (a plain GET, a missing key...).
    let accept = accept_key(&headers)?;
    let upgrading = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| not_websocket(StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded"))?;
    let peer = peer.map(|p| p.0 .0);
    state.metrics().ws_sessions_total.inc();
    // Small buffers: a socket lives for hours and mostly idles (tungstenite's defaults are
    // 128 KiB each way, which at 10k sockets is most of the process); clients send short
    // commands, and the stream's chunks do not pass through tungstenite's buffer.
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let sessions = state.sessions().clone();
    // Where the request is served (an edge thread, with its shard of the hub:
    // `server::serve_with`).
    tokio::spawn(sessions.clone().track_future(async move {
        let Ok(upgraded) = upgrading.await else {
            return;
        };
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        let active = state.metrics().ws_sessions_active.clone();
        active.inc();
        // Boxed: the wait for an `auth` message must not size the session's future, which
        // lives as long as the socket.
        // Until it is authenticated, the socket keeps its place among the connections that
        // are no stream (`max_pending_connections`): one that never sends `auth` is counted.
        let waiting = Box::pin(Waiting::new(socket, &state).authenticated(principal));
        let authenticated = waiting.await;
        if let Some(Extension(p)) = &pending {
            p.release();
        }
        let Some(principal) = authenticated else {
            active.dec();
            return;
        };
        let (socket, principal) = principal;
        let notifications = q.notifications.clone();
        // A task of its own for the session's life: this one (the upgrade, the wait for
        // `auth`, about 4.5 KiB of future) ends here instead of being held as long as the socket.
        let session = Box::new(Session::new(socket, state, headers, peer, principal, notifications));
        tokio::spawn(sessions.track_future(async move {
            session.run(Box::new(q)).await;
            active.dec();
        }));
    }));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// A socket before it is authenticated.
struct Waiting<'a> {
    socket: Socket,
    state: &'a AppState,
}

impl<'a> Waiting<'a> {
    fn new(socket: Socket, state: &'a AppState) -> Self {
        Waiting { socket, state }
    }

    /// The caller: the upgrade's, or the one the first message's token names (closed 4003
    /// otherwise).
    async fn authenticated(mut self, known: Option<Principal>) -> Option<(Socket, Principal)> {
        if let Some(p) = known {
            return Some((self.socket, p));
        }
        let first = tokio::time::timeout(AUTH_WAIT, self.socket.next()).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_answers_the_rfc_example_and_names_what_is_missing() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        // RFC 6455, 1.3.
        assert_eq!(accept_key(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        for (name, what) in [
            (header::CONNECTION, "Connection"),
            (header::UPGRADE, "Upgrade"),
            (header::SEC_WEBSOCKET_VERSION, "Sec-WebSocket-Version"),
            (header::SEC_WEBSOCKET_KEY, "Sec-WebSocket-Key"),
        ] {
            let mut without = h.clone();
            without.remove(&name);
            let e = accept_key(&without).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "not_websocket"));
            assert!(e.message.contains(what), "{}", e.message);
        }
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(accept_key(&h).is_err());
    }
}
