//! `GET /api/presence?channel=`: who is connected to a channel now, across every gateway
//! (`crate::presence`).

use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
    Extension, Json,
};
use event_bus::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::auth::{caller, named_channel};
use crate::{app::AppState, auth::principal::Principal, error::ApiError};

/// Query of `GET /api/presence`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// The channel.
    channel: Option<String>,
    /// The token, for clients that cannot set headers (redacted from logs).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// `GET /api/presence?channel=` (role `admin`, or a token granting the channel): `{channel,
/// users: [{user, connections}], connections, at}`, by user.
pub async fn presence(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    query: Result<Query<PresenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let p = caller(&state, &principal)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let channel = named_channel(&state, q.channel)?;
    // Its followers are its users: no presence there.
    if state.notifications().is_some_and(|n| n.config().channel == channel) {
        return Err(ApiError::bad_request(
            "unknown_channel",
            format!("channel {channel} has no presence"),
        ));
    }
    if !p.is_admin() && !p.allows(&channel) {
        return Err(ApiError::forbidden(
            "forbidden_channel",
            format!("the token does not grant channel {channel}"),
        ));
    }
    let roster = state.presence().read(channel.as_str()).await.map_err(|e| {
        tracing::warn!(error = %e, "reading presence");
        ApiError::unavailable("store_unavailable", "Redis did not answer; try again", 2)
    })?;
    Ok(Json(json!({
        "channel": channel,
        "users": crate::presence::users(&roster),
        "connections": roster.values().sum::<u64>(),
        "at": Timestamp::now_ms(),
    }))
    .into_response())
}
