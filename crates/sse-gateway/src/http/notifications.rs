//! The notification endpoints: thin handlers over [`notifications::Notifications`] (the model,
//! the stores and the store-then-publish rule live in that crate).

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use notifications::{Error, Level, NewNotification};
use serde::Deserialize;
use serde_json::json;

use super::{
    auth::caller,
    body::{rate_limited, read_body},
};
use crate::{
    app::{AppState, Notify},
    auth::principal::Principal,
    error::ApiError,
};

/// The answer to a refused notification request.
pub(crate) fn api_error(e: Error) -> ApiError {
    match e {
        Error::Invalid { code, message } => ApiError::bad_request(code, message),
        Error::NotFound => ApiError {
            status: StatusCode::NOT_FOUND,
            code: "notification_not_found",
            message: e.to_string(),
            retry_after: None,
        },
        Error::Store(e) => {
            tracing::error!(error = %e, "notification store");
            ApiError::unavailable(
                "store_unavailable",
                "the notification store is unavailable; try again",
                2,
            )
        }
        Error::Bus(e) => ApiError::from_bus(e),
    }
}

fn enabled(state: &AppState) -> Result<&Notify, ApiError> {
    state.notifications().ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        code: "notifications_disabled",
        message: "per-user notifications are switched off on this server (notifications.enabled=false)".into(),
        retry_after: None,
    })
}

/// The caller as a notification owner (refused without one: see [`caller`]).
fn owner_of(state: &AppState, principal: &Option<Extension<Principal>>) -> Result<String, ApiError> {
    Ok(caller(state, principal)?.sub.clone())
}

/// Body of `POST /api/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    user_id: String,
    #[serde(rename = "type", default)]
    level: Level,
    title: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `POST /api/notifications` (publisher): stores a notification and delivers it to every
/// device of its user. 201 with the notification; 200 with the first one for a repeated
/// `idempotency_key`.
pub async fn create(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let n = enabled(&state)?;
    let body = read_body(state.config(), body).await?;
    let req: CreateRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_notification",
            format!("{e} (expected {{\"user_id\", \"type\": info|warning|error|success, \"title\", \"message\", \"idempotency_key\"?}})"),
        )
    })?;
    let req = NewNotification {
        user_id: req.user_id,
        level: req.level,
        title: req.title,
        message: req.message,
        idempotency_key: req.idempotency_key,
    };
    req.check().map_err(api_error)?;
    let caller = caller(&state, &principal)?.sub.clone();
    if let Err(wait) = state.publish_limiter().take(&caller, 1.0) {
        return Err(rate_limited(state.config().auth.publish_rate_per_sec, 1, wait));
    }
    let created = n.create(req).await.map_err(api_error)?;
    let c = &created.notification;
    state.metrics().notifications_created.inc();
    let status = if created.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // The notification itself, plus the user's unread count after it.
    let mut body = serde_json::to_value(c).unwrap_or_default();
    body["unread"] = json!(created.unread);
    Ok((status, Json(body)).into_response())
}

/// Query of `GET /api/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `true`: only unread ones.
    unread: Option<String>,
    /// At most this many (1 to 200, default 50).
    limit: Option<String>,
    /// Older than this notification id (the previous page's `next_before`).
    before: Option<String>,
    /// The token, for clients that cannot set headers (redacted from logs).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// `GET /api/notifications?unread=true&limit=&before=`: the caller's own, newest first, with
/// the unread count.
pub async fn list(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let n = enabled(&state)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let user = owner_of(&state, &principal)?;
    let unread_only = ApiError::flag("bad_unread", "unread", q.unread.as_deref(), false)?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(v) => match v.parse::<usize>() {
            Ok(l) if (1..=200).contains(&l) => l,
            _ => {
                return Err(ApiError::bad_request(
                    "bad_limit",
                    format!("limit={v:?}: expected 1 to 200"),
                ))
            }
        },
    };
    let page = n
        .list(
            &user,
            notifications::PageQuery {
                unread_only,
                limit,
                // `before=` (empty) is the first page, as without it.
                before: q.before.as_deref().filter(|b| !b.is_empty()),
            },
        )
        .await
        .map_err(api_error)?;
    let next_before = (page.notifications.len() == limit)
        .then(|| page.notifications.last().map(|n| n.stored.id.clone()))
        .flatten();
    Ok(Json(json!({
        "user_id": user,
        "notifications": page.notifications,
        "unread": page.unread,
        "total": page.total,
        "next_before": next_before,
    }))
    .into_response())
}

/// `POST /api/notifications/{id}/read`: marks one of the caller's notifications read; the
/// user's other devices get `NOTIFICATION_READ`. 404 for an id the caller does not have.
pub async fn read_one(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request("bad_id", e.body_text()))?;
    mark(&state, &principal, Some(id)).await
}

/// `POST /api/notifications/read-all`: marks all of the caller's notifications read.
pub async fn read_all(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    mark(&state, &principal, None).await
}

async fn mark(
    state: &AppState,
    principal: &Option<Extension<Principal>>,
    id: Option<String>,
) -> Result<Response, ApiError> {
    Ok(Json(mark_for(state, &owner_of(state, principal)?, id).await?).into_response())
}

/// Marks `user`'s notification `id` read (all, for `None`) and tells the user's devices;
/// answers `{id, marked, unread}`. The WebSocket's `mark_read` / `mark_all_read` too.
///
/// Reading a notification acknowledges it (`docs/reference.md`, "Acknowledgements"): each one
/// this marks is recorded as `acknowledged` by the user, its subject the notification id (for
/// read-all, the newest 200 unread).
pub(crate) async fn mark_for(state: &AppState, user: &str, id: Option<String>) -> Result<serde_json::Value, ApiError> {
    let n = enabled(state)?;
    let unread: Vec<String> = match &id {
        Some(id) => vec![id.clone()],
        None => {
            let q = notifications::PageQuery {
                unread_only: true,
                limit: 200,
                before: None,
            };
            let page = n.list(user, q).await.map_err(api_error)?;
            page.notifications.into_iter().map(|n| n.stored.id).collect()
        }
    };
    let m = n.mark(user, id).await.map_err(api_error)?;
    state.metrics().notifications_read.inc_by(m.changed);
    if m.changed > 0 {
        let ack = notifications::acks::Ack {
            user: user.to_owned(),
            kind: notifications::acks::AckKind::Acknowledged,
            role: None,
            at: event_bus::Timestamp::now_ms(),
        };
        for subject in &unread {
            // The read is done: an acknowledgement that cannot be recorded is logged, not
            // refused.
            if let Err(e) = state.acks().record(&n.config().channel, subject, &ack).await {
                tracing::warn!(error = %e, "recording a read notification's acknowledgement");
            }
        }
    }
    Ok(json!({"id": m.id.unwrap_or_else(|| "*".into()), "marked": m.changed, "unread": m.unread}))
}
