//! `GET /api/realtime/events`: one SSE stream (CONTRACT §3).
//!
//! A stream opens with `retry:` and a comment, so proxies and the browser see it at once. A
//! resuming client (`Last-Event-ID`, or `last_event_id` for a page's first connect) first gets
//! what it missed, read from the bus page by page, then live events from the hub; events the
//! hub queued meanwhile are skipped if the replay already covered them (per channel, by id), so
//! nothing is lost or repeated at the seam. Each message's `id:` is the cursor after it.

use std::{
    collections::HashSet,
    fmt::Write as _,
    sync::Arc,
    time::{Instant, SystemTime},
};

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::{ConnectInfo, Query, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Extension,
};
use bytes::{BufMut, Bytes, BytesMut};
use event_bus::{Bus, Channel, Cursor, EventId, EventType};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    coalesce::{Coalescer, Out},
    error::ApiError,
    hub::{Filter, HubEvent, Item, Refused, Registration, Transport},
    AppState,
};

/// Events read from the bus per replay page.
const REPLAY_PAGE: usize = 500;
/// Frames written in one chunk at most, when several are pending.
const BATCH: usize = 64;

/// Query parameters of the stream endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    /// Comma-separated channels (default: all).
    pub channels: Option<String>,
    /// Comma-separated types.
    pub types: Option<String>,
    /// Comma-separated entity ids (`payload.id`).
    pub ids: Option<String>,
    /// `true`: an `event:` line with the type, for `addEventListener`.
    pub named: Option<String>,
    /// A cursor, for the first connect of a page that already knows where it was.
    pub last_event_id: Option<String>,
    /// The token, for EventSource (it cannot set headers); never logged.
    pub access_token: Option<String>,
    /// Join the user's private notification channel: default `true` with `AUTH_MODE=jwt`,
    /// `false` with `none`.
    pub notifications: Option<String>,
}

fn list(v: &Option<String>) -> Vec<&str> {
    v.as_deref()
        .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

/// Opens a stream (the router's handler; `serve` usually takes these requests on its lean
/// path, [`crate::lean`], which calls [`open`] the same way).
pub async fn events(
    State(state): State<AppState>,
    // Absent when the router is served without connect info (tests calling app().oneshot()).
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let stream = open(&state, q, &headers, peer.map(|p| p.0 .0), Transport::Sse)?;
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk().await.map(|b| (Ok::<_, std::convert::Infallible>(b), s))
    }));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Checks a stream request and registers it with the hub; the stream then yields its bytes.
pub(crate) fn open(
    state: &AppState,
    q: StreamQuery,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    transport: Transport,
) -> Result<Stream, ApiError> {
    accepting(state)?;
    let query_token = query_token(q.access_token.as_deref());
    let principal = state
        .auth()
        .authenticate(headers, query_token.as_deref())
        .map_err(|e| ApiError::unauthorized(&e))?;
    let configured = state.config().public_channels();
    // An authenticated stream joins its user's private channel by itself; in AUTH_MODE=none
    // (no user, only the development principal) a stream asks for it with notifications=true.
    let join_private = ApiError::flag(
        "bad_notifications",
        "notifications",
        q.notifications.as_deref(),
        state.auth().mode().uses_tokens(),
    )?;
    // The user's own view of the private channel: joined by itself, never another user's.
    let private = state
        .notifications()
        .filter(|_| join_private)
        .filter(|_| notifications::check_user(&principal.sub).is_ok())
        .map(|n| n.private(&principal.sub));
    let is_private = |name: &str| private.as_ref().is_some_and(|p| p.channel.as_str() == name);
    let mut channels: Vec<Channel> = match list(&q.channels) {
        v if v.is_empty() => {
            let allowed: Vec<Channel> = configured.iter().filter(|c| principal.allows(c)).cloned().collect();
            if allowed.is_empty() && private.is_none() {
                return Err(ApiError::forbidden(
                    "forbidden_channel",
                    "the token grants none of this server's channels",
                ));
            }
            allowed
        }
        v => {
            let mut out = Vec::new();
            let mut unknown = Vec::new();
            for name in v {
                if is_private(name) {
                    continue;
                }
                match Channel::new(name) {
                    Ok(c) if configured.contains(&c) => {
                        if !out.contains(&c) {
                            out.push(c)
                        }
                    }
                    _ => unknown.push(name.to_owned()),
                }
            }
            if !unknown.is_empty() {
                return Err(ApiError::bad_request(
                    "unknown_channel",
                    format!(
                        "unknown channels: {}; this server has: {}",
                        unknown.join(", "),
                        names(&configured)
                    ),
                ));
            }
            let refused = principal.refused(&out);
            if !refused.is_empty() {
                return Err(ApiError::forbidden(
                    "forbidden_channel",
                    format!(
                        "the token does not grant: {}",
                        refused.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            out
        }
    };
    let types = match list(&q.types) {
        v if v.is_empty() => None,
        v => Some(
            v.into_iter()
                .map(|t| EventType::new(t).map_err(|e| ApiError::bad_request("bad_type", e.to_string())))
                .collect::<Result<HashSet<_>, _>>()?,
        ),
    };
    let ids = match list(&q.ids) {
        v if v.is_empty() => None,
        v if v.len() > 1000 => return Err(ApiError::bad_request("too_many_ids", "at most 1000 ids per stream")),
        v => Some(v.into_iter().map(str::to_owned).collect::<HashSet<_>>()),
    };
    let named = ApiError::flag("bad_named", "named", q.named.as_deref(), false)?;
    // The browser's own Last-Event-ID (a reconnect) is newer than the page's query parameter.
    let resume_text = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
        .or_else(|| q.last_event_id.clone().filter(|s| !s.is_empty()));
    let resume = match &resume_text {
        None => None,
        Some(text) => Some(text.parse::<Cursor>().map_err(|e| {
            ApiError::bad_request(
                "bad_cursor",
                format!("Last-Event-ID / last_event_id is not a cursor of this server: {e}"),
            )
        })?),
    };
    if let Some(p) = &private {
        channels.push(p.channel.clone());
    }
    let filter = Arc::new(Filter {
        channels,
        types,
        ids,
        private,
    });
    // Per-client limits count the user when there is one, the IP otherwise.
    let client = if state.auth().mode().uses_tokens() {
        format!("user:{}", principal.sub)
    } else {
        client_key(state, peer, headers)
    };
    let reg = state
        .hub()
        .register(
            filter.clone(),
            resume.is_some(),
            client,
            Some(principal.sub.clone()),
            transport,
        )
        .map_err(|r| match r {
            Refused::AtCapacity => ApiError::unavailable(
                "too_many_connections",
                "this instance is at its connection limit; try another or later",
                5,
            ),
            Refused::ClientAtCapacity => ApiError {
                status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                code: "too_many_connections_for_client",
                message: format!(
                    "this client already has {} open streams; close one (one stream can follow several channels)",
                    state.config().max_connections_per_client
                ),
                retry_after: Some(5),
            },
        })?;
    if resume.is_some() {
        state.metrics().reconnects_with_cursor.inc();
    }
    // Start where the client was; channels it has no position in start at the hub's head.
    let mut reg = reg;
    let mut cursor = std::mem::take(&mut reg.head);
    let mut pending = Vec::new();
    if let Some(r) = &resume {
        for c in &filter.channels {
            if let Some(pos) = r.get(c) {
                cursor.set(c.clone(), pos);
                pending.push(c.clone());
            }
        }
    }
    // A stream that does not resume the private channel gets the unread notifications first.
    let snapshot_due = filter
        .private
        .as_ref()
        .is_some_and(|p| resume.as_ref().is_none_or(|r| r.get(&p.channel).is_none()));
    tracing::debug!(conn = reg.info.id, channels = %names(&filter.channels), resumed = resume.is_some(), "stream opened");
    let window = std::time::Duration::from_millis(state.config().debounce_window_ms);
    let expires = principal.expires_at.map(|exp| {
        let left = exp.saturating_sub(now_ms() / 1000);
        Instant::now() + std::time::Duration::from_secs(left)
    });
    let stream = Stream {
        state: state.clone(),
        expires,
        heartbeat: state.hub().heartbeat(),
        draining: state.draining().clone(),
        reg,
        filter,
        seen: cursor.clone(),
        // Only a resuming stream replays.
        replay_pos: if pending.is_empty() {
            Cursor::new()
        } else {
            cursor.clone()
        },
        cursor,
        coalescer: Coalescer::new(window, state.config().max_group),
        outs: Vec::new(),
        pending,
        named,
        phase: Phase::Start,
        buf: BytesMut::new(),
        snapshot_due,
        snapshot_ids: HashSet::new(),
        ended: None,
        ws: transport == Transport::Ws,
    };
    Ok(stream)
}

/// `access_token` from a stream's query, as the query string [`crate::auth::Verifier`] reads
/// tokens from.
pub(crate) fn query_token(token: Option<&str>) -> Option<String> {
    token.map(|t| serde_urlencoded::to_string([("access_token", t)]).unwrap_or_default())
}

/// 503 unless this instance takes streams now (realtime on, not draining).
pub(crate) fn accepting(state: &AppState) -> Result<(), ApiError> {
    if !state.config().realtime_enabled {
        return Err(ApiError::unavailable(
            "realtime_disabled",
            "realtime updates are switched off on this server (REALTIME_ENABLED=false)",
            60,
        ));
    }
    if state.draining().is_cancelled() {
        return Err(ApiError::unavailable(
            "draining",
            "this instance is shutting down; reconnect",
            1,
        ));
    }
    Ok(())
}

/// Who the client is for per-client limits: its IP (behind a trusted proxy, the first
/// `X-Forwarded-For` entry).
fn client_key(state: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
    if state.config().trust_forwarded_for {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        if let Some(ip) = forwarded {
            return ip.to_owned();
        }
    }
    peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn names(channels: &[Channel]) -> String {
    channels.iter().map(Channel::as_str).collect::<Vec<_>>().join(", ")
}

enum Phase {
    Start,
    CatchUp,
    Live,
    Closing(Ended),
    Done,
}

/// One open stream: where it stands, and what it still has to write.
pub(crate) struct Stream {
    state: AppState,
    /// When the token expires: the stream ends then, saying so.
    expires: Option<Instant>,
    reg: Registration,
    filter: Arc<Filter>,
    /// The position written in `id:` lines: past every event written, never past a held one.
    cursor: Cursor,
    /// Past every event taken in (written or held): the replay/live seam is checked on it.
    seen: Cursor,
    /// Where the replay of each pending channel has read to (filtered-out events included).
    replay_pos: Cursor,
    coalescer: Coalescer,
    outs: Vec<Out>,
    /// Channels still to replay from the bus.
    pending: Vec<Channel>,
    named: bool,
    phase: Phase,
    heartbeat: watch::Receiver<u64>,
    draining: CancellationToken,
    buf: BytesMut,
    /// The unread notifications are still to be sent (a stream that does not resume the
    /// private channel, or one whose position there is gone).
    snapshot_due: bool,
    /// Notification ids the snapshot had: their live copies are dropped.
    snapshot_ids: HashSet<String>,
    /// Why the stream ended, once it has.
    ended: Option<Ended>,
    /// WebSocket framing (one JSON message per line) instead of SSE.
    ws: bool,
}

/// Why a stream ended: SSE says it in the last comment, the WebSocket in its close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The token expired: reconnect with a fresh one.
    TokenExpired,
    /// The server drains: reconnect (elsewhere).
    Draining,
    /// The process stops (the heartbeat is gone): reconnect (elsewhere).
    Stopping,
    /// The client did not keep up: resume from the last cursor.
    TooSlow,
    /// The backplane failed: try again later.
    Upstream,
    /// The hub closed the queue for another reason.
    Closed,
}

impl Ended {
    /// The last comment of an SSE stream.
    fn comment(self) -> &'static str {
        match self {
            Ended::TokenExpired => "token expired: reconnect with a fresh token",
            Ended::Draining => "server draining",
            Ended::Stopping => "server stopping",
            Ended::TooSlow => "too slow: resume from your last event id",
            Ended::Upstream => "upstream unavailable: reconnect later",
            Ended::Closed => "closed",
        }
    }
}

impl Stream {
    /// Why the stream ended, once `next_chunk` returned `None`.
    pub(crate) fn ended(&self) -> Option<Ended> {
        self.ended
    }

    /// The channels the stream follows (the private one included).
    pub(crate) fn channels(&self) -> &[Channel] {
        &self.filter.channels
    }

    /// The cursor past every event written so far.
    pub(crate) fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The next bytes to write; `None` when the stream has ended. Cancel-safe: a call dropped
    /// at an await loses nothing (every await either completes before state changes, or is a
    /// cancel-safe receive).
    pub(crate) async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.snapshot_due && matches!(self.phase, Phase::CatchUp | Phase::Live) {
                if let Err(reason) = self.write_snapshot().await {
                    self.phase = Phase::Closing(reason);
                    continue;
                }
                if !self.buf.is_empty() {
                    return Some(self.buf.split().freeze());
                }
            }
            match self.phase {
                Phase::Start => {
                    self.phase = if self.pending.is_empty() {
                        Phase::Live
                    } else {
                        Phase::CatchUp
                    };
                    // A socket has nothing like `retry:` to say first; SSE opens at once.
                    if !self.ws {
                        let retry = self.state.config().retry_ms;
                        self.buf
                            .put_slice(format!("retry: {retry}\n: connected {}\n\n", self.reg.info.id).as_bytes());
                        return Some(self.buf.split().freeze());
                    }
                }
                Phase::CatchUp if self.expires.is_some_and(|e| e <= Instant::now()) => {
                    self.write_expired();
                    self.phase = Phase::Closing(Ended::TokenExpired);
                }
                Phase::CatchUp => {
                    if let Err(reason) = self.catch_up_page().await {
                        self.phase = Phase::Closing(reason);
                        continue;
                    }
                    if self.pending.is_empty() {
                        self.phase = Phase::Live;
                    }
                    if !self.buf.is_empty() {
                        return Some(self.buf.split().freeze());
                    }
                }
                Phase::Live => {
                    let due = self.coalescer.next_due();
                    let expires = self.expires;
                    tokio::select! {
                        biased;
                        _ = self.draining.cancelled() => self.phase = Phase::Closing(Ended::Draining),
                        _ = tokio::time::sleep_until(expires.unwrap_or_else(Instant::now).into()), if expires.is_some() => {
                            self.write_expired();
                            self.phase = Phase::Closing(Ended::TokenExpired);
                        }
                        _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                            self.coalescer.flush_due(Instant::now(), &mut self.outs);
                            self.write_outs();
                            if !self.buf.is_empty() {
                                return Some(self.buf.split().freeze());
                            }
                        }
                        item = self.reg.rx.recv() => match item {
                            Some(item) => {
                                self.write_item(item);
                                // Several frames pending: one write.
                                let mut drained = false;
                                for _ in 1..BATCH {
                                    match self.reg.rx.try_recv() {
                                        Ok(item) => self.write_item(item),
                                        Err(_) => {
                                            drained = true;
                                            break;
                                        }
                                    }
                                }
                                // What was put aside latest-wins is newer than the queue: after it.
                                if drained {
                                    self.write_collapsed();
                                }
                                if !self.buf.is_empty() {
                                    return Some(self.buf.split().freeze());
                                }
                            }
                            None => {
                                let cut = self.reg.info.cut.load(std::sync::atomic::Ordering::Relaxed);
                                self.phase = Phase::Closing(if cut { Ended::TooSlow } else { Ended::Closed });
                            }
                        },
                        _ = self.reg.collapsed.notify.notified() => {
                            if self.reg.rx.is_empty() {
                                self.write_collapsed();
                                if !self.buf.is_empty() {
                                    return Some(self.buf.split().freeze());
                                }
                            }
                        }
                        changed = self.heartbeat.changed() => {
                            if changed.is_err() {
                                self.phase = Phase::Closing(Ended::Stopping);
                            } else {
                                return Some(Bytes::from_static(if self.ws { WS_HEARTBEAT_LINE } else { b": heartbeat\n\n" }));
                            }
                        }
                    }
                }
                Phase::Closing(reason) => {
                    self.phase = Phase::Done;
                    self.ended = Some(reason);
                    // Whatever is held goes out before the stream ends.
                    self.coalescer.flush_all(Instant::now(), &mut self.outs);
                    self.write_outs();
                    if !self.ws {
                        let retry = self.state.config().retry_ms + jitter(self.state.config().drain_retry_spread_ms);
                        self.buf
                            .put_slice(format!("retry: {retry}\n: {}\n\n", reason.comment()).as_bytes());
                    }
                    return Some(self.buf.split().freeze());
                }
                Phase::Done => return None,
            }
        }
    }

    /// The last message of a stream whose token expired: `{"type": "TOKEN_EXPIRED", ...}`
    /// (no `id:`, so the client resumes from its last event with a fresh token).
    fn write_expired(&mut self) {
        self.open_frame(false, "TOKEN_EXPIRED");
        self.buf.put_slice(
            b"{\"type\":\"TOKEN_EXPIRED\",\"message\":\"the token expired: reconnect with a fresh one and your Last-Event-ID\"}",
        );
        self.close_frame();
    }

    /// Starts a message: SSE `id:` (the cursor, if `with_cursor`), `event:` (named streams)
    /// and `data: `; WebSocket `{"op":"message","cursor":...,"data":`. The data follows, then
    /// [`Stream::close_frame`].
    fn open_frame(&mut self, with_cursor: bool, event: &str) {
        if self.ws {
            self.buf.put_slice(b"{\"op\":\"message\"");
            if with_cursor {
                // A cursor is base64url: nothing to escape.
                let _ = write!(Frame(&mut self.buf), ",\"cursor\":\"{}\"", self.cursor);
            }
            self.buf.put_slice(b",\"data\":");
            return;
        }
        if with_cursor {
            let _ = writeln!(Frame(&mut self.buf), "id: {}", self.cursor);
        }
        if self.named {
            let _ = writeln!(Frame(&mut self.buf), "event: {event}");
        }
        self.buf.put_slice(b"data: ");
    }

    fn close_frame(&mut self) {
        self.buf.put_slice(if self.ws { b"}\n" as &[u8] } else { b"\n\n" });
    }

    /// The user's unread notifications, newest first, as one `NOTIFICATION_UNREAD` message.
    ///
    /// Cancel-safe like the rest of [`Stream::next_chunk`] (the WebSocket races it against the
    /// socket): nothing changes until the store has answered.
    async fn write_snapshot(&mut self) -> Result<(), Ended> {
        let (Some(n), Some(p)) = (self.state.notifications(), self.filter.private.clone()) else {
            self.snapshot_due = false;
            return Ok(());
        };
        let read = Box::pin(n.snapshot(&p.user)).await;
        self.snapshot_due = false;
        let (unread, list) = match read {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(conn = self.reg.info.id, error = %e, "unread notifications unavailable; closing so the client retries");
                return Err(Ended::Upstream);
            }
        };
        self.snapshot_ids = list.iter().map(|n| n.stored.id.clone()).collect();
        let message = serde_json::json!({
            "type": notifications::NOTIFICATION_UNREAD,
            "channel": p.channel,
            "user_id": p.user,
            "unread": unread,
            "notifications": list,
            "timestamp": event_bus::Timestamp::now(),
        });
        self.open_frame(true, notifications::NOTIFICATION_UNREAD);
        let _ = write!(Frame(&mut self.buf), "{message}");
        self.close_frame();
        Ok(())
    }

    /// Whether `ev` is a notification the snapshot already had (then it is not sent again).
    fn in_snapshot(&mut self, ev: &HubEvent) -> bool {
        !self.snapshot_ids.is_empty()
            && self
                .filter
                .private
                .as_ref()
                .is_some_and(|p| p.channel == ev.env.channel)
            && ev.env.event_type.as_str() == notifications::NOTIFICATION
            && self.snapshot_ids.remove(&ev.env.payload.id)
    }

    /// Replays one page of the first pending channel into the buffer.
    async fn catch_up_page(&mut self) -> Result<(), Ended> {
        let Some(channel) = self.pending.first().cloned() else {
            return Ok(());
        };
        let after = self.replay_pos.get(&channel).unwrap_or(EventId::ZERO);
        // Boxed: the replay future (a Redis round trip) would otherwise size every stream's
        // state machine, live or not.
        let page = match Box::pin(self.state.bus().replay(&channel, after, REPLAY_PAGE)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(conn = self.reg.info.id, error = %e, "replay failed; closing so the client retries");
                return Err(Ended::Upstream);
            }
        };
        if let Some(resume_from) = page.resync {
            self.replay_pos.set(channel.clone(), resume_from);
            self.write_item(Item::Resync(Box::new((channel.clone(), resume_from))));
        }
        let at_head = page.at_head;
        if page.resync.is_none() {
            self.replay_pos.advance(&channel, page.last);
        }
        for env in page.events {
            self.replay_pos.advance(&channel, env.id);
            if self.filter.wants(&env) {
                let ev = Arc::new(HubEvent::new(env, self.state.metrics()));
                self.write_item(Item::Event(ev));
            }
        }
        if at_head || page.resync.is_some() {
            self.pending.remove(0);
        }
        Ok(())
    }

    fn write_item(&mut self, item: Item) {
        let now = Instant::now();
        match item {
            Item::Event(ev) => {
                // Covered by the replay already, or from before this connection's start.
                if self.seen.get(&ev.env.channel).is_some_and(|pos| ev.env.id <= pos) {
                    return;
                }
                self.seen.advance(&ev.env.channel, ev.env.id);
                if self.in_snapshot(&ev) {
                    // Delivered by the snapshot: the cursor passes it.
                    self.cursor.advance(&ev.env.channel, ev.env.id);
                    return;
                }
                self.coalescer.offer(ev, now, &mut self.outs);
                self.write_outs();
            }
            Item::Resync(r) => {
                let (channel, resume_from) = *r;
                self.coalescer.flush_channel(&channel, now, &mut self.outs);
                self.write_outs();
                self.seen.set(channel.clone(), resume_from);
                self.write_resync(&channel, resume_from);
                // Notifications may be gone with the events: the unread ones again.
                if self.filter.private.as_ref().is_some_and(|p| p.channel == channel) {
                    self.snapshot_due = true;
                }
            }
        }
    }

    fn write_collapsed(&mut self) {
        for ev in self.reg.collapsed.take() {
            self.write_item(Item::Event(ev));
        }
    }

    fn write_outs(&mut self) {
        let outs = std::mem::take(&mut self.outs);
        for out in &outs {
            match out {
                Out::Single(ev) => self.write_event(ev),
                Out::Group(events) => self.write_group(events),
            }
        }
        self.outs = outs;
        self.outs.clear();
    }

    fn delivered(&self, ev: &HubEvent, now_ms: u64) {
        ev.delivered[self.reg.info.transport as usize].inc();
        self.state
            .metrics()
            .delivery_latency
            .observe(now_ms.saturating_sub(ev.env.id.ms) as f64 / 1000.0);
    }

    fn write_event(&mut self, ev: &HubEvent) {
        self.cursor.advance(&ev.env.channel, ev.env.id);
        self.open_frame(true, ev.env.event_type.as_str());
        self.buf.put_slice(&ev.json);
        self.close_frame();
        self.reg
            .info
            .events_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.delivered(ev, now_ms());
    }

    /// Two or more events of one channel and type as one message (CONTRACT §3): the type, the
    /// count, the payloads in order, and the id and time of the last; the cursor passes all.
    fn write_group(&mut self, events: &[Arc<HubEvent>]) {
        let last = events.last().expect("a group has events");
        for ev in events {
            self.cursor.advance(&ev.env.channel, ev.env.id);
        }
        let payloads: Vec<&event_bus::Payload> = events.iter().map(|e| &e.env.payload).collect();
        let message = serde_json::json!({
            "id": last.env.id,
            "type": last.env.event_type,
            "channel": last.env.channel,
            "count": events.len(),
            "payloads": payloads,
            "timestamp": last.env.timestamp,
        });
        self.open_frame(true, last.env.event_type.as_str());
        let _ = write!(Frame(&mut self.buf), "{message}");
        self.close_frame();
        self.reg
            .info
            .events_sent
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.state.metrics().groups_coalesced.inc();
        let now = now_ms();
        for ev in events {
            self.delivered(ev, now);
        }
    }

    fn write_resync(&mut self, channel: &Channel, resume_from: EventId) {
        self.cursor.set(channel.clone(), resume_from);
        self.state.metrics().resyncs.inc();
        self.open_frame(true, "RESYNC");
        let _ = write!(
            Frame(&mut self.buf),
            "{{\"type\":\"RESYNC\",\"channel\":\"{channel}\",\"resume_from\":\"{resume_from}\"}}"
        );
        self.close_frame();
    }
}

/// Frame bytes for the WebSocket: one message per line (JSON has no raw newline), and this
/// line for a heartbeat (sent as a ping frame).
pub(crate) const WS_HEARTBEAT: &[u8] = b"ping";
const WS_HEARTBEAT_LINE: &[u8] = b"ping\n";

struct Frame<'a>(&'a mut BytesMut);

impl std::fmt::Write for Frame<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// A share of `spread` ms, different for each call, so clients do not come back in one wave.
fn jitter(spread: u64) -> u64 {
    if spread == 0 {
        return 0;
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos() as u64;
    let mut x = nanos ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % spread
}
