//! Opening a stream: check the request against the caller's grants, register with the hub,
//! and set the stream up to replay what the client missed (`docs/reference.md`, "Streams").

use std::{collections::HashSet, sync::Arc, time::Duration};

use event_bus::{Channel, Cursor, EventType};

use super::{
    frame::Encoder,
    request::StreamRequest,
    session::{Start, Stream, UPSTREAM_BACKOFF_MAX, UPSTREAM_WAIT},
};
use crate::{
    app::AppState,
    auth::principal::Principal,
    hub::{filter::Filter, follows::Following, registry::Refused},
    telemetry::transport::Transport,
};

/// Why a stream is refused: a stable `code`, and what to do.
#[derive(Debug)]
pub struct Refusal {
    /// What kind of refusal (the transports' status).
    pub kind: RefusalKind,
    /// Stable code, e.g. `unknown_channel`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

/// The kinds of [`Refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is wrong.
    BadRequest,
    /// The token does not allow it.
    Forbidden,
    /// This instance cannot take it now; try again in this many seconds (elsewhere).
    Unavailable(u64),
    /// This client has too many streams; try again in this many seconds.
    TooMany(u64),
}

fn refuse(kind: RefusalKind, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        code,
        message: message.into(),
    }
}

/// Refused unless this instance takes streams now (realtime on, not draining).
pub fn accepting(state: &AppState) -> Result<(), Refusal> {
    if !state.config().realtime_enabled {
        return Err(refuse(
            RefusalKind::Unavailable(60),
            "realtime_disabled",
            "realtime updates are switched off on this server (REALTIME_ENABLED=false)",
        ));
    }
    if state.draining().is_cancelled() {
        return Err(refuse(
            RefusalKind::Unavailable(1),
            "draining",
            "this instance is shutting down; reconnect",
        ));
    }
    Ok(())
}

/// The channels asked for, checked: known to this server, granted by the token; all granted
/// ones when none are named. The private channel is never asked for by name.
fn channels(
    state: &AppState,
    principal: &Principal,
    asked: &[String],
    private: Option<&Channel>,
) -> Result<Vec<Channel>, Refusal> {
    let configured = state.config().public_channels();
    if asked.is_empty() {
        let allowed: Vec<Channel> = configured.iter().filter(|c| principal.allows(c)).cloned().collect();
        if allowed.is_empty() && private.is_none() {
            return Err(refuse(
                RefusalKind::Forbidden,
                "forbidden_channel",
                "the token grants none of this server's channels",
            ));
        }
        return Ok(allowed);
    }
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for name in asked {
        if private.is_some_and(|p| p.logical() == name) {
            continue;
        }
        match Channel::new(name.as_str()) {
            Ok(c) if configured.contains(&c) => {
                if !out.contains(&c) {
                    out.push(c)
                }
            }
            _ => unknown.push(name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(refuse(
            RefusalKind::BadRequest,
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
        return Err(refuse(
            RefusalKind::Forbidden,
            "forbidden_channel",
            format!(
                "the token does not grant: {}",
                refused.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(out)
}

/// The filter of a request: its channels (the private one last), types and entity ids.
fn filter(state: &AppState, principal: &Principal, req: &StreamRequest) -> Result<Filter, Refusal> {
    // The user's own view of the private channel: joined by itself, never another user's.
    let private = state
        .notifications()
        .filter(|_| req.join_private)
        .filter(|_| notifications::check_user(&principal.sub).is_ok())
        .map(|n| n.private(&principal.sub));
    let channels = channels(state, principal, &req.channels, private.as_ref().map(|p| &p.channel))?;
    let types = match req.types.as_slice() {
        [] => None,
        v => Some(
            v.iter()
                .map(|t| {
                    EventType::new(t.as_str()).map_err(|e| refuse(RefusalKind::BadRequest, "bad_type", e.to_string()))
                })
                .collect::<Result<HashSet<_>, _>>()?,
        ),
    };
    let ids = match req.ids.as_slice() {
        [] => None,
        v if v.len() > 1000 => {
            return Err(refuse(
                RefusalKind::BadRequest,
                "too_many_ids",
                "at most 1000 ids per stream",
            ))
        }
        v => Some(v.iter().cloned().collect::<HashSet<_>>()),
    };
    // A channel with partitions is followed in each of its streams.
    let mut channels = state.bus().config().streams(&channels);
    if let Some(p) = &private {
        channels.push(p.channel.clone());
    }
    Ok(Filter {
        channels,
        types,
        ids,
        private,
        presence: req.presence,
    })
}

/// Checks a stream request of `principal`, has the hub follow its channels (on demand) and
/// registers it; the stream then yields what `out` encodes.
pub async fn open<E: Encoder>(
    state: &AppState,
    principal: &Principal,
    req: StreamRequest,
    transport: Transport,
    out: E,
) -> Result<Stream<E>, Refusal> {
    accepting(state)?;
    let filter = Arc::new(filter(state, principal, &req)?);
    let resume = match &req.resume {
        None => None,
        Some(text) => Some(text.parse::<Cursor>().map_err(|e| {
            refuse(
                RefusalKind::BadRequest,
                "bad_cursor",
                format!("Last-Event-ID / last_event_id is not a cursor of this server: {e}"),
            )
        })?),
    };
    if resume.is_some() {
        // A resume replays from the bus: bounded per client, or a loop of reconnects with an
        // old cursor (and a filter that matches nothing) would page through the retention
        // again and again.
        state.resume_limiter().take(&req.client, 1.0).map_err(|wait| {
            refuse(
                RefusalKind::TooMany(wait),
                "too_many_resumes",
                format!(
                    "this client resumes streams faster than {} per second; retry in {wait} s",
                    state.config().resume_rate_per_sec
                ),
            )
        })?;
    }
    let following = follow(state, &filter.channels).await?;
    let mut reg = state
        .hub()
        .register(
            filter.clone(),
            following,
            resume.is_some(),
            req.client,
            Some(principal.sub.clone()),
            transport,
        )
        .map_err(|r| match r {
            Refused::AtCapacity => refuse(
                RefusalKind::Unavailable(5),
                "too_many_connections",
                "this instance is at its connection limit; try another or later",
            ),
            Refused::ClientAtCapacity => refuse(
                RefusalKind::TooMany(5),
                "too_many_connections_for_client",
                format!(
                    "this client already has {} open streams; close one (one stream can follow several channels)",
                    state.config().max_connections_per_client
                ),
            ),
        })?;
    if resume.is_some() {
        state.metrics().reconnects_with_cursor.inc();
    }
    // Start where the client was; channels it has no position in start at the hub's head, and
    // so does a channel whose partitions changed since the cursor was written, after a RESYNC.
    let mut cursor = std::mem::take(&mut reg.head);
    let mut pending = Vec::new();
    let mut resyncs = Vec::new();
    if let Some(r) = &resume {
        let bus = state.bus().config();
        let private = filter.private.as_ref().map(|p| &p.channel);
        let mut changed: Vec<&str> = Vec::new();
        for c in filter.channels.iter().filter(|c| Some(*c) != private) {
            let name = c.logical();
            if !changed.contains(&name) && Channel::new(name).is_ok_and(|c| bus.partitions_changed(&c, r)) {
                changed.push(name);
            }
        }
        for c in &filter.channels {
            if changed.contains(&c.logical()) {
                // One RESYNC per channel, from its first stream's replay: a position past any
                // the store has is a gap, answered at the head.
                if !resyncs.iter().any(|r: &Channel| r.logical() == c.logical()) {
                    resyncs.push(c.clone());
                    pending.push(c.clone());
                }
            } else if let Some(pos) = r.get(c) {
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
    Ok(Stream::new(
        state,
        Start {
            reg,
            filter,
            cursor,
            pending,
            resyncs,
            snapshot_due,
            // A stream ends when its token does; an `exp` too far away to be an instant never
            // comes.
            expires: principal.expires_instant(),
            transport,
        },
        out,
    ))
}

/// Has the hub follow `channels` (on demand). A channel not followed yet needs its head read
/// from the bus: while the bus cannot be reached that is tried again, the request held, as a
/// stream's replay is (100 ms doubling to 1 s, for up to 10 s), then refused with 503.
async fn follow(state: &AppState, channels: &[Channel]) -> Result<Following, Refusal> {
    let give_up = tokio::time::Instant::now() + UPSTREAM_WAIT;
    let mut backoff = Duration::from_millis(100);
    loop {
        match state.hub().follow(channels).await {
            Ok(f) => return Ok(f),
            Err(e) if tokio::time::Instant::now() + backoff < give_up => {
                tracing::debug!(error = %e, "cannot follow a stream's channels yet; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(UPSTREAM_BACKOFF_MAX);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not follow a stream's channels upstream");
                return Err(refuse(
                    RefusalKind::Unavailable(1),
                    "upstream_unavailable",
                    "the event store cannot be reached now; reconnect later",
                ));
            }
        }
    }
}

fn names(channels: &[Channel]) -> String {
    channels.iter().map(Channel::as_str).collect::<Vec<_>>().join(", ")
}
