//! One authenticated WebSocket session: the URL's subscription, then the socket's messages and
//! the stream's, until one side ends. `subscribe` and `unsubscribe` open a new stream from the
//! session's cursor.

use std::{net::SocketAddr, time::Duration};

use axum::http::HeaderMap;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{
    command::{parse, Command},
    encoder::WsEncoder,
    reply::{
        ack_body, close, send, send_error, Socket, CLOSE_RESTART, CLOSE_STREAMLESS, CLOSE_TOKEN_EXPIRED,
        CLOSE_TOO_SLOW, CLOSE_TRY_LATER,
    },
};
use crate::{
    app::AppState,
    auth::principal::Principal,
    error::ApiError,
    http::notifications::mark_for,
    stream::{frame::Ended, open::open, request::StreamRequest, session::Stream},
    telemetry::{metrics::Closed, transport::Transport},
    transport::{
        query::{self, StreamQuery},
        write::{write, Failed, Pace},
    },
};

pub(crate) struct Session {
    socket: Socket,
    state: AppState,
    /// The upgrade request's headers (`Last-Event-ID`, `X-Forwarded-For`), until the first
    /// stream opened: a socket lives for hours, and they would be a tenth of its memory.
    headers: Option<HeaderMap>,
    peer: Option<SocketAddr>,
    /// Whose streams the per-client limit counts them as (`query::client_key`).
    client: String,
    /// The `notifications` flag in force (the URL's, then the last `subscribe`'s).
    notifications: Option<String>,
    /// Who the socket is for: verified once, at the upgrade or by the `auth` message.
    principal: Principal,
    stream: Option<Stream<WsEncoder>>,
    /// When the session ends whatever it does: its token's expiry.
    expires: Option<tokio::time::Instant>,
    /// A write failed (the client is gone or took nothing for `write_timeout_ms`).
    broken: bool,
}

/// Why the loop stopped.
enum Stop {
    /// The client went away, or sent a close.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

impl Session {
    pub(crate) fn new(
        socket: Socket,
        state: AppState,
        headers: HeaderMap,
        peer: Option<SocketAddr>,
        principal: Principal,
        notifications: Option<String>,
    ) -> Self {
        Session {
            client: query::client_key(&state, &principal, peer, &headers),
            socket,
            state,
            headers: Some(headers),
            peer,
            notifications,
            expires: principal.expires_instant().map(tokio::time::Instant::from_std),
            principal,
            stream: None,
            broken: false,
        }
    }

    /// Runs the session to its end. Boxed: the session (about a KiB) is then held once, not
    /// once as the future's argument and again as its local, for the socket's whole life.
    pub(crate) async fn run(mut self: Box<Self>, q: Box<StreamQuery>) {
        let stop = match self.start(*q).await {
            Some(refused) => refused,
            None => self.serve().await,
        };
        if let Stop::Close(code, reason) = stop {
            close(&mut self.socket, code, reason).await;
        }
    }

    /// The URL's subscription (default: every channel the token grants), as an SSE stream
    /// would have it.
    async fn start(&mut self, q: StreamQuery) -> Option<Stop> {
        let headers = self.headers.take().unwrap_or_default();
        let opened = match query::request(&self.state, &self.principal, &q, &headers, self.peer) {
            Ok(req) => open_ws(&self.state, &self.principal, req).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        match opened {
            Ok(s) => self.stream = Some(s),
            Err(e) => {
                self.error(None, e.code, &e.message).await;
                // Over a limit: the session would be one more socket the limits do not count.
                if e.retry_after.is_some() {
                    return Some(Stop::Close(CLOSE_TRY_LATER, "too many streams: try again later"));
                }
            }
        }
        None
    }

    fn expired(&self) -> bool {
        self.expires.is_some_and(|e| e <= tokio::time::Instant::now())
    }

    async fn serve(&mut self) -> Stop {
        let draining = self.state.draining().clone();
        let pace = Pace::of(self.state.config());
        let streamless_limit = Duration::from_millis(self.state.config().ws_streamless_ms);
        // Since when the session has had no stream (a session is bounded by its streams).
        let mut streamless_since = tokio::time::Instant::now();
        loop {
            if self.broken {
                return Stop::Gone;
            }
            let idle = self.stream.is_none();
            if !idle {
                streamless_since = tokio::time::Instant::now();
            }
            let expires = self.expires;
            let stream = self.stream.as_mut();
            let chunk = async {
                match stream {
                    Some(s) => {
                        let chunk = s.next_chunk().await;
                        (chunk, s.ended())
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                (chunk, ended) = chunk => match chunk {
                    Some(bytes) => {
                        // The chunk's frames in one write, like SSE, after whatever tungstenite
                        // still holds (a pong), so no frame is cut by another; under the same
                        // rules (`crate::transport::write`).
                        let Some(stream) = self.stream.as_ref() else { continue };
                        match tokio::time::timeout(pace.stalled, self.socket.flush()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return Stop::Gone,
                            Err(_) => {
                                Failed::Stalled.record(self.state.metrics(), &pace);
                                return Stop::Gone;
                            }
                        }
                        if let Err(failed) = write(self.socket.get_mut(), &bytes, &pace, stream.cut()).await {
                            failed.record(self.state.metrics(), &pace);
                            return Stop::Gone;
                        }
                    }
                    None => {
                        return match ended {
                            Some(Ended::TokenExpired) => Stop::Close(CLOSE_TOKEN_EXPIRED, "token expired: reconnect with a fresh one"),
                            Some(Ended::Draining | Ended::Stopping) => Stop::Close(CLOSE_RESTART, "server draining: reconnect"),
                            Some(Ended::Rebalancing) => Stop::Close(CLOSE_RESTART, "rebalancing: reconnect"),
                            Some(Ended::TooSlow) => Stop::Close(CLOSE_TOO_SLOW, "too slow: resume from your last cursor"),
                            Some(Ended::Upstream) => Stop::Close(CLOSE_TRY_LATER, "upstream unavailable: try again later"),
                            Some(Ended::Closed) | None => Stop::Close(1000, "closed"),
                        };
                    }
                },
                msg = self.socket.next() => match msg {
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
                    Some(Ok(_)) if self.expired() => {
                        self.error(None, "token_expired", "the token has expired: reconnect with a fresh one").await;
                        return Stop::Close(CLOSE_TOKEN_EXPIRED, "token expired: reconnect with a fresh one");
                    }
                    // Boxed: a command's future (store, then publish) must not size the session's.
                    Some(Ok(Message::Text(text))) => Box::pin(self.command(&text)).await,
                    Some(Ok(Message::Binary(_))) => {
                        self.error(None, "binary_not_supported", "send JSON commands as text frames").await
                    }
                    Some(Ok(_)) => {} // ping/pong: answered by the library
                },
                // Without a stream the token still bounds the session (with one, the stream
                // ends first, saying so).
                _ = tokio::time::sleep_until(expires.unwrap_or_else(tokio::time::Instant::now)), if idle && expires.is_some() => {
                    self.error(None, "token_expired", "the token has expired: reconnect with a fresh one").await;
                    return Stop::Close(CLOSE_TOKEN_EXPIRED, "token expired: reconnect with a fresh one");
                }
                _ = tokio::time::sleep_until(streamless_since + streamless_limit), if idle => {
                    self.state.metrics().closed(Closed::Streamless);
                    return Stop::Close(CLOSE_STREAMLESS, "no subscription: subscribe, or close the socket");
                }
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
                if !send(&mut self.socket, json!({"op": "pong", "id": id})).await {
                    self.broken = true;
                }
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
                    .map(|s| crate::hub::filter::logical_names(s.channels()))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| private.as_ref().is_none_or(|p| c != p.as_str()) && !channels.contains(c))
                    .collect();
                // The same default as the stream's (joined where requests carry tokens).
                let keeps_private = private.is_some()
                    && query::join_private(&self.state, self.notifications.as_deref()).unwrap_or(false);
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
                let result = mark_for(&self.state, &self.principal.sub, Some(notification_id)).await;
                self.answer(id, result).await
            }
            Command::MarkAllRead { .. } => {
                let result = mark_for(&self.state, &self.principal.sub, None).await;
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
        let join_private = match query::join_private(&self.state, self.notifications.as_deref()) {
            Ok(j) => j,
            Err(e) => return self.error(id, e.code, &e.message).await,
        };
        let req = StreamRequest {
            channels: crate::stream::request::split_list(channels.as_deref()),
            types: types.unwrap_or_default(),
            ids: ids.unwrap_or_default(),
            resume: cursor.clone(),
            join_private,
            presence: false,
            client: self.client.clone(),
        };
        match open_ws(&self.state, &self.principal, req).await {
            Ok(s) => {
                // The private channel by its name, not the user's partition of it.
                let channels = crate::hub::filter::logical_names(s.channels());
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

    async fn ack(&mut self, id: Option<Value>, body: Value) {
        if !send(&mut self.socket, ack_body(id, body)).await {
            self.broken = true;
        }
    }

    async fn error(&mut self, id: Option<Value>, code: &str, message: &str) {
        if !send_error(&mut self.socket, id, code, message).await {
            self.broken = true;
        }
    }
}

/// Opens a stream of `req` for a socket. Boxed: the opening's future (the bus's answer to a
/// first follow) would otherwise size the session's for its whole life.
async fn open_ws(
    state: &AppState,
    principal: &Principal,
    req: StreamRequest,
) -> Result<Stream<WsEncoder>, crate::stream::open::Refusal> {
    Box::pin(open(state, principal, req, Transport::Ws, WsEncoder::default())).await
}
