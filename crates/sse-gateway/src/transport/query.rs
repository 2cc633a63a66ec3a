//! A stream request as it arrives over HTTP, on either transport: the query string, the
//! `Last-Event-ID` header, the token (header, cookie or query), the client's address. Turned
//! into a [`StreamRequest`] for a [`Principal`].

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::{
    app::AppState,
    auth::principal::Principal,
    error::ApiError,
    stream::{
        open::{Refusal, RefusalKind},
        request::{split_list, StreamRequest},
    },
};

/// A refused stream as an HTTP answer.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let (status, retry_after) = match r.kind {
            RefusalKind::BadRequest => (StatusCode::BAD_REQUEST, None),
            RefusalKind::Forbidden => (StatusCode::FORBIDDEN, None),
            RefusalKind::Unavailable(s) => (StatusCode::SERVICE_UNAVAILABLE, Some(s)),
            RefusalKind::TooMany(s) => (StatusCode::TOO_MANY_REQUESTS, Some(s)),
        };
        ApiError {
            status,
            code: r.code,
            message: r.message,
            retry_after,
        }
    }
}

/// Query parameters of the stream endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    /// Comma-separated channels (default: all).
    pub channels: Option<String>,
    /// Comma-separated types.
    pub types: Option<String>,
    /// Comma-separated entity ids (`payload.id`).
    pub ids: Option<String>,
    /// `true`: an `event:` line with the type, for `addEventListener` (SSE).
    pub named: Option<String>,
    /// A cursor, for the first connect of a page that already knows where it was.
    pub last_event_id: Option<String>,
    /// The token, for EventSource (it cannot set headers); never logged. A stream ticket
    /// (`ticket`) is better: a URL ends up in logs.
    pub access_token: Option<String>,
    /// A stream ticket (`POST /api/realtime/ticket`) instead of the token; never logged.
    pub ticket: Option<String>,
    /// Join the user's private notification channel: default `true` with `AUTH_MODE=jwt`,
    /// `false` with `none`.
    pub notifications: Option<String>,
    /// `true` (or `1`): `PRESENCE` messages of the stream's channels.
    pub presence: Option<String>,
}

/// Who sends a stream request: the query's `ticket`, else the headers' credentials or the
/// query's `access_token`.
pub fn authenticate(state: &AppState, headers: &HeaderMap, q: &StreamQuery) -> Result<Principal, ApiError> {
    if let Some(ticket) = q.ticket.as_deref().filter(|t| !t.is_empty()) {
        return redeem(state, ticket);
    }
    state
        .auth()
        .authenticate(headers, q.access_token.as_deref())
        .map_err(|e| ApiError::unauthorized(&e))
}

/// The caller a stream ticket stands for (`AUTH_MODE=none`: the development principal).
pub fn redeem(state: &AppState, ticket: &str) -> Result<Principal, ApiError> {
    let auth = state.auth();
    if !auth.mode().uses_tokens() {
        return Ok(Principal::development());
    }
    let tickets = auth.tickets().ok_or_else(ApiError::tickets_disabled)?;
    tickets
        .redeem(ticket, event_bus::Timestamp::now_ms() / 1000)
        .map_err(|e| ApiError::unauthorized(&e))
}

/// Whether a stream joins the private channel (`notifications=`): by default when requests
/// carry tokens (an authenticated user); in `AUTH_MODE=none` only when asked.
pub fn join_private(state: &AppState, flag: Option<&str>) -> Result<bool, ApiError> {
    ApiError::flag(
        "bad_notifications",
        "notifications",
        flag,
        state.auth().mode().uses_tokens(),
    )
}

/// Who the client is for per-client limits: the user when requests carry tokens, else its IP
/// (behind trusted proxies, the `X-Forwarded-For` entry they added: see [`forwarded_client`]).
pub fn client_key(state: &AppState, principal: &Principal, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
    if state.auth().mode().uses_tokens() {
        return format!("user:{}", principal.sub);
    }
    if state.config().trust_forwarded_for {
        let header = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        if let Some(ip) = header.and_then(|h| forwarded_client(h, state.config().trusted_proxy_hops)) {
            return ip.to_owned();
        }
    }
    peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// The client in an `X-Forwarded-For` value behind `hops` trusted proxies: the entry `hops`
/// from the right (each proxy appends the address it saw; anything left of that the client may
/// have written), or the leftmost when there are fewer entries.
pub fn forwarded_client(header: &str, hops: usize) -> Option<&str> {
    let entries: Vec<&str> = header.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let i = entries.len().saturating_sub(hops.max(1));
    entries.get(i).copied()
}

/// The stream request of `principal`: the query's lists and flags, and where to resume (the
/// browser's own `Last-Event-ID`, a reconnect, is newer than the page's `last_event_id`).
pub fn request(
    state: &AppState,
    principal: &Principal,
    q: &StreamQuery,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<StreamRequest, ApiError> {
    let join_private = join_private(state, q.notifications.as_deref())?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
        .or_else(|| q.last_event_id.clone().filter(|s| !s.is_empty()));
    Ok(StreamRequest {
        channels: split_list(q.channels.as_deref()),
        types: split_list(q.types.as_deref()),
        ids: split_list(q.ids.as_deref()),
        resume,
        join_private,
        presence: ApiError::flag("bad_presence", "presence", q.presence.as_deref(), false)?,
        client: client_key(state, principal, peer, headers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_what_the_trusted_proxies_added() {
        assert_eq!(forwarded_client("203.0.113.7", 1), Some("203.0.113.7"));
        assert_eq!(forwarded_client("6.6.6.6, 203.0.113.7", 1), Some("203.0.113.7"));
        assert_eq!(
            forwarded_client("6.6.6.6, 203.0.113.7, 10.0.0.2", 2),
            Some("203.0.113.7")
        );
        assert_eq!(
            forwarded_client("203.0.113.7", 3),
            Some("203.0.113.7"),
            "fewer entries than hops"
        );
        assert_eq!(forwarded_client(" , ", 1), None);
    }
}
