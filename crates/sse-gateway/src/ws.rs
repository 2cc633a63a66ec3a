//! `GET /api/realtime/ws`: the same streams over one WebSocket, in both directions.
//!
//! A session is the SSE machinery ([`crate::sse::open`] and its stream) writing a different
//! framing (one JSON message per line, sent as frames without a copy), so everything SSE guarantees holds here too: one cursor over every channel,
//! replay on resume, grouping, RESYNC, the unread snapshot, the slow-consumer cut, the token's
//! expiry, the drain. `subscribe` and `unsubscribe` open a new stream from the session's
//! cursor, which is exactly a reconnect with `Last-Event-ID`: nothing lost, nothing twice.
//!
//! Server → client, JSON text frames (`proto-schemas/ws-server.schema.json`):
//! - `{"op":"message","cursor":"...","data":{...}}`: `data` is exactly what SSE puts in
//!   `data:` (an envelope, a group, `RESYNC`, `NOTIFICATION_UNREAD`), `cursor` what SSE puts
//!   in `id:` (absent where SSE has none: `TOKEN_EXPIRED`);
//! - `{"op":"ack","id":...,...}` and `{"op":"error","id":...,"code":"...","message":"..."}`
//!   for each command (`id` echoed), `{"op":"pong","id":...}`.
//!
//! Client → server (`proto-schemas/ws-client.schema.json`): `auth` (the token, as the first
//! message when the URL carries none), `subscribe` (`channels`, `types`, `ids`,
//! `notifications`, optional `cursor`), `unsubscribe` (`channels`), `mark_read`
//! (`notification_id`), `mark_all_read`, `ping`. A malformed command gets an `error` and the
//! socket stays open; a message over 64 KiB closes it with 1009.
//!
//! Close codes: 4001 the token expired (reconnect with a fresh one and the last cursor), 4003
//! not authenticated, 4008 too slow (resume from the last cursor), 1012 the server drains
//! (reconnect, elsewhere), 1013 the backplane is down (try again later).

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
        ConnectInfo, Query, State,
    },
    http::{header, HeaderMap, HeaderValue},
    response::Response,
    Extension,
};
use futures::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::ApiError,
    sse::{self, Ended, Stream, StreamQuery},
    AppState,
};

/// The request-line prefix `serve` routes to the upgrade-capable path.
pub const PREFIX: &[u8] = b"GET /api/realtime/ws";
/// Largest message (and frame) a client may send.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long a session without a token in its URL waits for the `auth` message.
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// A client that takes no bytes for this long is dropped (its cursor stays valid): a socket
/// that never reads must not hold a task and its buffers for ever.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// The token expired: reconnect with a fresh one, from the last cursor.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// No valid token.
pub const CLOSE_UNAUTHORIZED: u16 = 4003;
/// The client did not keep up: resume from the last cursor.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// The server drains or stops: reconnect.
pub const CLOSE_RESTART: u16 = 1012;
/// The backplane is down: try again later.
pub const CLOSE_TRY_LATER: u16 = 1013;

/// Whether the peeked bytes start a WebSocket request (served with HTTP upgrades).
pub fn wants(peeked: &[u8]) -> bool {
    peeked.starts_with(PREFIX) && matches!(peeked.get(PREFIX.len()), Some(b' ') | Some(b'?'))
}

/// `GET /api/realtime/ws`: checks what can be checked before the upgrade (a token that is
/// there but bad is a 401, as on every endpoint), then runs the session.
pub async fn upgrade(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    sse::accepting(&state)?;
    let query_token = sse::query_token(q.access_token.as_deref());
    // The user now, or (no token anywhere) from the `auth` message.
    let user = match state.auth().authenticate(&headers, query_token.as_deref()) {
        Ok(p) => Some(p.sub),
        Err(crate::auth::AuthError::Missing(_)) => None,
        Err(e) => return Err(ApiError::unauthorized(&e)),
    };
    let peer = peer.map(|p| p.0 .0);
    state.metrics().ws_sessions_total.inc();
    // Small buffers: a socket lives for hours and mostly idles (tungstenite's defaults are
    // 128 KiB each way, which at 10k sockets is most of the process).
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(4 << 20)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let active = state.metrics().ws_sessions_active.clone();
            active.inc();
            Session {
                socket,
                state,
                headers,
                peer,
                token_query: q.access_token.clone(),
                notifications: q.notifications.clone(),
                stream: None,
                needs_auth_message: user.is_none(),
                user: user.unwrap_or_default(),
            }
            .run(q)
            .await;
            active.dec();
        }))
}

/// A client command.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Auth {
        #[allow(dead_code)]
        id: Option<Value>,
        token: String,
    },
    Subscribe {
        #[allow(dead_code)]
        id: Option<Value>,
        channels: Option<Vec<String>>,
        types: Option<Vec<String>>,
        ids: Option<Vec<String>>,
        notifications: Option<bool>,
        cursor: Option<String>,
    },
    Unsubscribe {
        #[allow(dead_code)]
        id: Option<Value>,
        channels: Vec<String>,
    },
    MarkRead {
        #[allow(dead_code)]
        id: Option<Value>,
        notification_id: String,
    },
    MarkAllRead {
        #[allow(dead_code)]
        id: Option<Value>,
    },
    Ping {
        #[allow(dead_code)]
        id: Option<Value>,
    },
}

struct Session {
    socket: WebSocket,
    state: AppState,
    /// The upgrade request's headers (with the `auth` message's token once it came).
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    token_query: Option<String>,
    notifications: Option<String>,
    stream: Option<Stream>,
    /// No token came with the upgrade: the first message must be `auth`.
    needs_auth_message: bool,
    /// The token's `sub`, once authenticated (the owner for `mark_read`).
    user: String,
}

/// Why the loop stopped.
enum Stop {
    /// The client went away, or sent a close.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

impl Session {
    async fn run(mut self, q: StreamQuery) {
        let stop = match self.start(q).await {
            Err(stop) => stop,
            Ok(()) => self.serve().await,
        };
        if let Stop::Close(code, reason) = stop {
            let close = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }));
            let _ = tokio::time::timeout(Duration::from_secs(5), self.socket.send(close)).await;
        }
    }

    /// Authentication (from the URL, or the first message) and the URL's subscription.
    async fn start(&mut self, q: StreamQuery) -> Result<(), Stop> {
        if self.needs_auth_message {
            let first = tokio::time::timeout(AUTH_WAIT, self.socket.recv()).await;
            let Ok(Some(Ok(Message::Text(text)))) = first else {
                return Err(Stop::Close(
                    CLOSE_UNAUTHORIZED,
                    "send {\"op\":\"auth\",\"token\":...} first",
                ));
            };
            let (id, cmd) = parse(&text);
            let token = match cmd {
                Ok(Command::Auth { token, .. }) => token,
                _ => {
                    self.error(
                        id,
                        "auth_required",
                        "the first message must be {\"op\":\"auth\",\"token\":\"<jwt>\"}",
                    )
                    .await;
                    return Err(Stop::Close(CLOSE_UNAUTHORIZED, "not authenticated"));
                }
            };
            match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(v) => {
                    self.headers.insert(header::AUTHORIZATION, v);
                }
                Err(_) => {
                    self.error(id, "invalid_token", "the token is not valid").await;
                    return Err(Stop::Close(CLOSE_UNAUTHORIZED, "not authenticated"));
                }
            }
            match self.state.auth().authenticate(&self.headers, None) {
                Ok(p) => self.user = p.sub,
                Err(e) => {
                    self.error(id, e.code(), &e.to_string()).await;
                    return Err(Stop::Close(CLOSE_UNAUTHORIZED, "not authenticated"));
                }
            }
            self.ack(id, json!({"authenticated": true})).await;
        }
        // The URL's channels (default: every one the token grants), as an SSE stream would.
        match sse::open(&self.state, q, &self.headers, self.peer, crate::hub::Transport::Ws) {
            Ok(s) => self.stream = Some(s),
            Err(e) if e.status.as_u16() == 401 => {
                self.error(None, e.code, &e.message).await;
                return Err(Stop::Close(CLOSE_UNAUTHORIZED, "not authenticated"));
            }
            Err(e) => self.error(None, e.code, &e.message).await,
        }
        Ok(())
    }

    async fn serve(&mut self) -> Stop {
        let draining = self.state.draining().clone();
        loop {
            let idle = self.stream.is_none();
            let chunk = async {
                match self.stream.as_mut() {
                    Some(s) => s.next_chunk().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                chunk = chunk => match chunk {
                    Some(bytes) => {
                        // Every frame of the chunk, then one flush (one write, like SSE).
                        let socket = &mut self.socket;
                        let write = async {
                            for message in to_messages(&bytes) {
                                socket.feed(message).await?;
                            }
                            socket.flush().await
                        };
                        match tokio::time::timeout(WRITE_STALL, write).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return Stop::Gone,
                            Err(_) => {
                                self.state.metrics().slow_consumer_disconnects.inc();
                                tracing::warn!("websocket client took nothing for {WRITE_STALL:?}: dropped, its cursor stays valid");
                                return Stop::Gone;
                            }
                        }
                    }
                    None => {
                        return match self.stream.as_ref().and_then(Stream::ended) {
                            Some(Ended::TokenExpired) => Stop::Close(CLOSE_TOKEN_EXPIRED, "token expired: reconnect with a fresh one"),
                            Some(Ended::Draining | Ended::Stopping) => Stop::Close(CLOSE_RESTART, "server draining: reconnect"),
                            Some(Ended::TooSlow) => Stop::Close(CLOSE_TOO_SLOW, "too slow: resume from your last cursor"),
                            Some(Ended::Upstream) => Stop::Close(CLOSE_TRY_LATER, "upstream unavailable: try again later"),
                            Some(Ended::Closed) | None => Stop::Close(1000, "closed"),
                        };
                    }
                },
                msg = self.socket.recv() => match msg {
                    None | Some(Ok(Message::Close(_))) => return Stop::Gone,
                    Some(Err(e)) => {
                        // Over the size limit (tungstenite has already refused it), or broken.
                        tracing::debug!(error = %e, "websocket receive failed");
                        return if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                            Stop::Close(1009, "message too big")
                        } else {
                            Stop::Gone
                        };
                    }
                    Some(Ok(Message::Text(text))) => self.command(&text).await,
                    Some(Ok(Message::Binary(_))) => {
                        self.error(None, "binary_not_supported", "send JSON commands as text frames").await
                    }
                    Some(Ok(_)) => {} // ping/pong: answered by the library
                },
                _ = draining.cancelled(), if idle => {
                    return Stop::Close(CLOSE_RESTART, "server draining: reconnect");
                }
            }
        }
    }

    async fn command(&mut self, text: &str) {
        self.state.metrics().ws_commands.inc();
        let (id, cmd) = parse(text);
        let cmd = match cmd {
            Ok(c) => c,
            Err(message) => return self.error(id, "bad_command", &message).await,
        };
        match cmd {
            Command::Auth { .. } => {
                self.error(
                    id,
                    "already_authenticated",
                    "this socket is authenticated; reconnect to change the token",
                )
                .await
            }
            Command::Ping { .. } => {
                let _ = self
                    .socket
                    .send(Message::Text(json!({"op": "pong", "id": id}).to_string().into()))
                    .await;
            }
            Command::Subscribe {
                channels,
                types,
                ids,
                notifications,
                cursor,
                ..
            } => {
                if let Some(n) = notifications {
                    self.notifications = Some(n.to_string());
                }
                let cursor = cursor.or_else(|| self.current_cursor());
                self.resubscribe(id, channels.map(|c| c.join(",")), types, ids, cursor)
                    .await
            }
            Command::Unsubscribe { channels, .. } => {
                let private = self.state.notifications().map(|n| n.config().channel.clone());
                if private
                    .as_ref()
                    .is_some_and(|p| channels.iter().any(|c| c == p.as_str()))
                {
                    self.notifications = Some("false".into());
                }
                let keep: Vec<String> = self
                    .stream
                    .as_ref()
                    .map(|s| s.channels().to_vec())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| Some(c) != private.as_ref() && !channels.iter().any(|u| u == c.as_str()))
                    .map(|c| c.to_string())
                    .collect();
                let keeps_private = self.notifications.as_deref() != Some("false") && private.is_some();
                if keep.is_empty() && !keeps_private {
                    let cursor = self.current_cursor();
                    self.stream = None;
                    return self.ack(id, json!({"channels": [], "cursor": cursor})).await;
                }
                let cursor = self.current_cursor();
                let list = (!keep.is_empty()).then(|| keep.join(","));
                // Only the private channel left: ask for it alone.
                let list = list.or_else(|| private.map(|p| p.to_string()));
                self.resubscribe(id, list, None, None, cursor).await
            }
            Command::MarkRead { notification_id, .. } => {
                let result = crate::notify::mark_for(&self.state, &self.user, Some(notification_id)).await;
                self.answer(id, result).await
            }
            Command::MarkAllRead { .. } => {
                let result = crate::notify::mark_for(&self.state, &self.user, None).await;
                self.answer(id, result).await
            }
        }
    }

    /// Replaces the subscription with a new stream from `cursor`: a reconnect without one.
    async fn resubscribe(
        &mut self,
        id: Option<Value>,
        channels: Option<String>,
        types: Option<Vec<String>>,
        ids: Option<Vec<String>>,
        cursor: Option<String>,
    ) {
        let q = StreamQuery {
            channels,
            types: types.map(|t| t.join(",")),
            ids: ids.map(|i| i.join(",")),
            named: None,
            last_event_id: cursor.clone(),
            access_token: self.token_query.clone(),
            notifications: self.notifications.clone(),
        };
        match sse::open(&self.state, q, &self.headers, self.peer, crate::hub::Transport::Ws) {
            Ok(s) => {
                let channels: Vec<String> = s.channels().iter().map(|c| c.to_string()).collect();
                // The old stream goes only now: the new one registered first, and starts
                // where the old one's client was.
                self.stream = Some(s);
                self.ack(id, json!({"channels": channels, "cursor": cursor})).await
            }
            Err(e) => self.error(id, e.code, &e.message).await,
        }
    }

    fn current_cursor(&self) -> Option<String> {
        self.stream
            .as_ref()
            .map(|s| s.cursor().to_string())
            .filter(|c| !c.is_empty())
    }

    async fn answer(&mut self, id: Option<Value>, result: Result<Value, ApiError>) {
        match result {
            Ok(v) => self.ack(id, v).await,
            Err(e) => self.error(id, e.code, &e.message).await,
        }
    }

    async fn ack(&mut self, id: Option<Value>, mut body: Value) {
        body["op"] = json!("ack");
        body["id"] = id.unwrap_or(Value::Null);
        let _ = self.socket.send(Message::Text(body.to_string().into())).await;
    }

    async fn error(&mut self, id: Option<Value>, code: &str, message: &str) {
        let body = json!({"op": "error", "id": id, "code": code, "message": message});
        let _ = self.socket.send(Message::Text(body.to_string().into())).await;
    }
}

/// The command's `id` (even when the rest is wrong, so the error can name it) and the command.
fn parse(text: &str) -> (Option<Value>, Result<Command, String>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return (None, Err(format!("not JSON: {e}"))),
    };
    let id = value.get("id").cloned();
    let cmd = serde_json::from_value(value)
        .map_err(|e| format!("{e} (ops: auth, subscribe, unsubscribe, mark_read, mark_all_read, ping)"));
    (id, cmd)
}

/// A chunk of the stream in WebSocket framing (one JSON message per line, `ping` for a
/// heartbeat) as frames, each message a slice of the chunk: no copy.
fn to_messages(chunk: &bytes::Bytes) -> Vec<Message> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in chunk.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        let line = chunk.slice(start..i);
        start = i + 1;
        if line.is_empty() {
            continue;
        }
        if line.as_ref() == sse::WS_HEARTBEAT {
            out.push(Message::Ping(bytes::Bytes::new()));
        } else if let Ok(text) = Utf8Bytes::try_from(line) {
            out.push(Message::Text(text));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_text_frames_and_the_heartbeat_a_ping() {
        let chunk = bytes::Bytes::from_static(
            b"ping\n{\"op\":\"message\",\"cursor\":\"abc_-1\",\"data\":{\"type\":\"X\"}}\n{\"op\":\"message\",\"data\":{}}\n",
        );
        let m = to_messages(&chunk);
        assert_eq!(m.len(), 3);
        assert!(matches!(&m[0], Message::Ping(p) if p.is_empty()));
        let Message::Text(t) = &m[1] else { panic!("{m:?}") };
        assert_eq!(t.as_str(), r#"{"op":"message","cursor":"abc_-1","data":{"type":"X"}}"#);
        assert!(matches!(&m[2], Message::Text(t) if t.as_str() == r#"{"op":"message","data":{}}"#));
    }

    #[test]
    fn commands_parse_or_say_why() {
        let (id, c) = parse(r#"{"op":"subscribe","id":7,"channels":["orders"],"cursor":"x"}"#);
        assert_eq!(id, Some(json!(7)));
        assert!(matches!(c, Ok(Command::Subscribe { .. })));
        let (id, c) = parse(r#"{"op":"fly","id":"a"}"#);
        assert_eq!(id, Some(json!("a")));
        assert!(c.unwrap_err().contains("ops:"));
        let (_, c) = parse(r#"{"op":"mark_read","id":1}"#);
        assert!(c.unwrap_err().contains("notification_id"));
        let (id, c) = parse("{not json");
        assert!(id.is_none() && c.unwrap_err().starts_with("not JSON"));
        let (_, c) = parse(r#"{"op":"ping","id":1,"extra":true}"#);
        assert!(c.is_err(), "unknown fields are refused");
    }
}
