//! Web Push subscriptions of the caller's browsers (`notifications.push.*`): the VAPID public
//! key a browser subscribes with, and the subscriptions the sinks deliver to (their `web_push`
//! destinations). An endpoint is taken only at a push service `notifications.push.allowed_hosts`
//! lists ([`notifications::push::host_allowed`]). 404 `push_disabled` while no public key is set
//! or notifications are off.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use event_bus::Timestamp;
use notifications::push::Subscription;
use serde::Deserialize;
use serde_json::json;

use super::{auth::caller, body::read_body};
use crate::{app::AppState, auth::principal::Principal, error::ApiError};

fn enabled(state: &AppState) -> Result<&notifications::PushConfig, ApiError> {
    let c = &state.config().notifications;
    if c.enabled && !c.push.public_key.is_empty() {
        return Ok(&c.push);
    }
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        code: "push_disabled",
        message: "Web Push is off on this server (notifications.push.public_key is not set)".into(),
        retry_after: None,
    })
}

fn store_error(e: notifications::StoreError) -> ApiError {
    tracing::error!(error = %e, "push subscriptions");
    ApiError::unavailable(
        "store_unavailable",
        "the subscription store is unavailable; try again",
        2,
    )
}

fn listed(s: &Subscription) -> serde_json::Value {
    json!({"id": s.id, "host": s.host(), "created_at": s.created_at})
}

/// `GET /api/push/key`: the VAPID public key (`applicationServerKey` of `pushManager.subscribe`).
pub async fn key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let push = enabled(&state)?;
    Ok(Json(json!({"public_key": push.public_key})).into_response())
}

/// The keys of a browser's subscription.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    p256dh: String,
    auth: String,
}

/// Body of `POST /api/push/subscriptions`: what `PushSubscription.toJSON()` gives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubscribeRequest {
    endpoint: String,
    #[serde(default)]
    #[allow(dead_code)] // the push service says when a subscription is gone (404/410)
    expiration_time: Option<f64>,
    keys: Keys,
}

/// `POST /api/push/subscriptions`: stores a subscription of the caller's browser; 201, or 200
/// when that endpoint was subscribed before.
pub async fn subscribe(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let push = enabled(&state)?;
    let body = read_body(state.config(), body).await?;
    let req: SubscribeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_subscription",
            format!("{e} (expected PushSubscription.toJSON(): {{\"endpoint\", \"expirationTime\"?, \"keys\": {{\"p256dh\", \"auth\"}}}})"),
        )
    })?;
    let user = caller(&state, &principal)?.sub.clone();
    // The user id names Redis keys (its hash tag): one that cannot be a user's is refused.
    notifications::check_user(&user).map_err(|e| ApiError::bad_request("bad_user", e))?;
    let s = notifications::push::check(
        &req.endpoint,
        &req.keys.p256dh,
        &req.keys.auth,
        &push.allowed_hosts,
        Timestamp::now_ms(),
    )
    .map_err(|e| ApiError::bad_request("bad_subscription", e))?;
    let new = state
        .push()
        .add(
            &user,
            &s,
            push.max_per_user,
            std::time::Duration::from_secs(state.config().notifications.retention_days * 86_400),
        )
        .await
        .map_err(store_error)?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(listed(&s))).into_response())
}

/// `GET /api/push/subscriptions`: the caller's subscriptions (ids and push service hosts; an
/// endpoint itself is a credential and is not shown).
pub async fn list(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let user = caller(&state, &principal)?.sub.clone();
    let subs = state.push().list(&user).await.map_err(store_error)?;
    let subs: Vec<_> = subs.iter().map(listed).collect();
    Ok(Json(json!({"user_id": user, "subscriptions": subs})).into_response())
}

/// `DELETE /api/push/subscriptions/{id}`: 204; 404 for an id the caller does not have.
pub async fn unsubscribe(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let Path(id) = id.map_err(|e| ApiError::bad_request("bad_id", e.body_text()))?;
    let user = caller(&state, &principal)?.sub.clone();
    if state.push().remove(&user, &id).await.map_err(store_error)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "subscription_not_found",
            message: format!("no subscription {id:?} of this user"),
            retry_after: None,
        })
    }
}
