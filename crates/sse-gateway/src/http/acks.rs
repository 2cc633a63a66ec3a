//! `POST /api/events/{id}/acks` and `GET /api/events/{id}/acks`: who saw an event and who
//! acknowledged it (`docs/reference.md`, "Acknowledgements"). The model and the store are in
//! [`notifications::acks`]; this checks the request, records, and announces an acknowledgement
//! to the channel's streams as an `ACK` event.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use event_bus::{Action, Broker, Channel, EventType, NewEvent, Payload, Timestamp};
use notifications::acks::{check_subject, Ack, AckKind};
use serde::Deserialize;
use serde_json::json;

use super::{
    auth::{caller, named_channel},
    body::rate_limited,
};
use crate::{app::AppState, auth::principal::Principal, error::ApiError};

/// Query of both endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckQuery {
    /// The event's channel (event ids are per channel).
    channel: Option<String>,
    /// The token, for clients that cannot set headers (redacted from logs).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// Body of `POST /api/events/{id}/acks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    kind: String,
}

/// The channel and subject of a request, checked: a channel the bus carries and the caller's
/// token grants, not the private one (a notification is acknowledged by reading it).
fn target(
    state: &AppState,
    principal: &Principal,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<AckQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(Channel, String), ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request("bad_id", e.body_text()))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    // No event has such an id: nothing to acknowledge.
    check_subject(&id).map_err(|e| ApiError {
        status: StatusCode::NOT_FOUND,
        code: "event_not_found",
        message: e,
        retry_after: None,
    })?;
    // Event ids are per channel.
    let channel = named_channel(state, q.channel)?;
    if state.notifications().is_some_and(|n| n.config().channel == channel) {
        return Err(ApiError::bad_request(
            "private_channel",
            "a notification is acknowledged by reading it: POST /api/notifications/{id}/read",
        ));
    }
    if !principal.allows(&channel) {
        return Err(ApiError::forbidden(
            "forbidden_channel",
            format!("the token does not grant channel {channel}"),
        ));
    }
    Ok((channel, id))
}

fn store_error(e: notifications::StoreError) -> ApiError {
    tracing::warn!(error = %e, "acknowledgement store");
    ApiError::unavailable(
        "store_unavailable",
        "the acknowledgement store is unavailable; try again",
        2,
    )
}

/// `POST /api/events/{id}/acks?channel=` with `{"kind": "seen" | "acknowledged"}`: records the
/// caller's acknowledgement, once per (event, user, kind): 201 the first time, 200 after (the
/// first record kept). The first `acknowledged` of each user reaches the channel's streams as
/// an `ACK` event.
pub async fn record(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<AckQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let p = caller(&state, &principal)?;
    let (channel, subject) = target(&state, p, id, query)?;
    let body = super::body::read_body(state.config(), body).await?;
    let kind = serde_json::from_slice::<AckBody>(&body)
        .ok()
        .and_then(|b| AckKind::parse(&b.kind))
        .ok_or_else(|| ApiError::bad_request("bad_ack", "expected {\"kind\": \"seen\" | \"acknowledged\"}"))?;
    if let Err(wait) = state.publish_limiter().take(&format!("ack:{}", p.sub), 1.0) {
        return Err(rate_limited(state.config().auth.publish_rate_per_sec, 1, wait));
    }
    let ack = Ack {
        user: p.sub.clone(),
        kind,
        role: p.role.clone(),
        at: Timestamp::now_ms(),
    };
    let (new, ack) = state
        .acks()
        .record(&channel, &subject, &ack)
        .await
        .map_err(store_error)?;
    state
        .metrics()
        .acks
        .with_label_values(&[kind.as_str()])
        .inc_by(new as u64);
    if new && kind == AckKind::Acknowledged && state.config().realtime_enabled {
        // Keyed by (event, user): a retried request whose first publish got through adds none.
        let event = NewEvent::new(
            EventType::ACK,
            Payload::new(subject.clone(), Action::Updated)
                .with_data(json!({"kind": kind, "user": ack.user, "role": ack.role, "at": ack.at})),
        )
        .with_idempotency_key(format!("ack:{subject}:{}", ack.user));
        state.bus().publish(&channel, event).await.map_err(ApiError::from_bus)?;
    }
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((
        status,
        Json(json!({"channel": channel, "id": subject, "ack": ack, "new": new})),
    )
        .into_response())
}

/// `GET /api/events/{id}/acks?channel=`: `{channel, id, acks: [{user, kind, role?, at}]}`,
/// oldest first.
pub async fn list(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<AckQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let p = caller(&state, &principal)?;
    let (channel, subject) = target(&state, p, id, query)?;
    let acks = state.acks().list(&channel, &subject).await.map_err(store_error)?;
    Ok(Json(json!({"channel": channel, "id": subject, "acks": acks})).into_response())
}
