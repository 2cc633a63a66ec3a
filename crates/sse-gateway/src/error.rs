//! HTTP errors: a stable `code` and a message a user can act on, as JSON. Internal causes are
//! logged inside the request span, never sent to the client.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `unknown_channel`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// Seconds to wait before trying again (503, 429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401 for a missing or bad token, with the token error's stable code.
    pub fn unauthorized(e: &crate::auth::principal::AuthError) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: e.code(),
            message: e.to_string(),
            retry_after: None,
        }
    }

    /// 404: stream tickets are off (no key for them is configured).
    pub fn tickets_disabled() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "tickets_disabled",
            message: "stream tickets need auth.ticket_secret (or an HS256 secret); send the token instead".into(),
            retry_after: None,
        }
    }

    /// A `true`/`false` query parameter (`1`/`0`, and a bare `name` for true); `default` when
    /// absent; 400 with `code` otherwise.
    pub fn flag(code: &'static str, name: &str, value: Option<&str>, default: bool) -> Result<bool, Self> {
        match value {
            None => Ok(default),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => Err(ApiError::bad_request(
                code,
                format!("{name}={other:?}: expected true or false"),
            )),
        }
    }

    /// 403: authenticated, but the token does not allow this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 503 with a code, message and `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }

    /// Maps a bus error: the caller's mistakes are 400, the backplane's are 503.
    pub fn from_bus(e: event_bus::BusError) -> Self {
        use event_bus::BusError::*;
        match e {
            UnknownChannel(_) => ApiError::bad_request("unknown_channel", e.to_string()),
            UnknownType { .. } => ApiError::bad_request("unknown_type", e.to_string()),
            InvalidIdempotencyKey(_) => ApiError::bad_request("invalid_idempotency_key", e.to_string()),
            PayloadIdTooLong(_) => ApiError::bad_request("bad_payload_id", e.to_string()),
            other => {
                tracing::error!(error = %other, "bus error");
                ApiError::unavailable("bus_unavailable", "the event backplane is unavailable; try again", 2)
            }
        }
    }
}

impl ApiError {
    /// The headers that go with the status: `Retry-After` (429, 503) and `WWW-Authenticate`
    /// (401). The router's answers and the lean path's both carry them.
    pub fn headers(&self) -> Vec<(header::HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if let Some(s) = self.retry_after {
            out.push((header::RETRY_AFTER, HeaderValue::from(s)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            out.push((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rakuda-realtime\""),
            ));
        }
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let headers = self.headers();
        let mut r = (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response();
        r.headers_mut().extend(headers);
        r
    }
}
