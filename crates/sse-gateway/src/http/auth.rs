//! The authentication layer of the router (every endpoint but the open paths and the
//! dashboard's files), and `GET /api/dev/token` for `AUTH_MODE=dev`.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use event_bus::Channel;
use serde::Deserialize;
use serde_json::json;

use crate::{
    app::AppState,
    auth::{
        config::AuthMode,
        principal::{AuthError, Principal},
        token::{source, Source},
    },
    error::ApiError,
};

/// Whether a caller has a role.
type RoleCheck = fn(&Principal) -> bool;

/// Authentication of every API endpoint; the stream endpoints check their own. Roles: `admin`
/// for connections, test events and the sinks' destinations, `publisher` (or `admin`) for
/// publishing. The caller's [`crate::auth::Principal`] is put into the request's extensions.
///
/// A path in `auth.open_paths` (health, readiness, metrics by default) waives only the need
/// for a token: a caller that sends one still is that caller, a cookie-authenticated request
/// still passes the cross-site check, and a path that needs a role still needs it (so a
/// request without a token there is refused 401, never taken for an admin).
pub async fn require_auth(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let query_token = crate::auth::token::from_query(req.uri().query());
    let open = state.config().auth.open_paths.contains(&path);
    let principal = match state.auth().authenticate(req.headers(), query_token.as_deref()) {
        Ok(p) => Some(p),
        Err(_) if open => None,
        Err(e) => return ApiError::unauthorized(&e).into_response(),
    };
    if principal.is_some() {
        if let Err(e) = cross_site(&state, &req, query_token.as_deref()) {
            return e.into_response();
        }
    }
    let needs: Option<(&str, RoleCheck)> = match (req.method(), path.as_str()) {
        (_, "/api/realtime/connections" | "/api/realtime/test" | "/api/sinks/destinations") => {
            Some(("admin", Principal::is_admin))
        }
        (_, "/api/realtime/publish") => Some(("publisher", Principal::can_publish)),
        (&axum::http::Method::POST, "/api/notifications") => Some(("publisher", Principal::can_publish)),
        _ => None,
    };
    match (needs, &principal) {
        (Some(_), None) => {
            let missing = AuthError::Missing(state.config().auth.cookie_name.clone());
            return ApiError::unauthorized(&missing).into_response();
        }
        (Some((role, has)), Some(p)) if !has(p) => {
            return ApiError::forbidden("forbidden_role", format!("this needs the {role} role in the token"))
                .into_response();
        }
        _ => {}
    }
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

/// Refuses a cross-site request forgery: a state-changing request authenticated by the token
/// cookie (which a browser sends whichever page asks) must be JSON (a form cannot be) and
/// come from an allowed `Origin`. A bearer token or a service key proves the caller chose to
/// send it, and passes.
fn cross_site(state: &AppState, req: &axum::extract::Request, query_token: Option<&str>) -> Result<(), ApiError> {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let config = state.config();
    let headers = req.headers();
    if source(headers, query_token, &config.auth.cookie_name) != Some(Source::Cookie) {
        return Ok(());
    }
    crate::auth::origin::permitted(headers, &config.allowed_origins, config.trust_forwarded_for).map_err(|origin| {
        ApiError::forbidden(
            "origin_not_allowed",
            format!("a cookie-authenticated request from {origin} is refused: that origin is not in allowed_origins"),
        )
    })?;
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "json_required",
            message: "a cookie-authenticated request must be sent as Content-Type: application/json".into(),
            retry_after: None,
        });
    }
    Ok(())
}

/// The caller the authentication layer found. None means the path was configured open and the
/// request carried no token: refused (401), never taken for an admin.
pub fn caller<'a>(
    state: &AppState,
    principal: &'a Option<axum::Extension<Principal>>,
) -> Result<&'a Principal, ApiError> {
    principal
        .as_ref()
        .map(|p| &p.0)
        .ok_or_else(|| ApiError::unauthorized(&AuthError::Missing(state.config().auth.cookie_name.clone())))
}

/// The channel a request names in `?channel=` (required): one the bus carries, by its name (a
/// partition is not named). Whether the private channel is taken, and who may, is the caller's.
pub(crate) fn named_channel(state: &AppState, name: Option<String>) -> Result<Channel, ApiError> {
    let name = name.ok_or_else(|| ApiError::bad_request("missing_channel", "?channel= is required"))?;
    Channel::new(&name)
        .ok()
        .filter(|c| !c.is_partition() && state.bus().config().channels.iter().any(|s| s.name == *c))
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_channel",
                format!("channel {name:?} is not carried by this gateway"),
            )
        })
}

/// `POST /api/realtime/ticket`: a stream ticket for the caller, to open a stream with
/// `?ticket=` instead of putting the token in the URL (`docs/reference.md`, "Authentication").
pub async fn ticket(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
) -> Result<Response, ApiError> {
    let p = caller(&state, &principal)?;
    let tickets = state.auth().tickets().ok_or_else(ApiError::tickets_disabled)?;
    let now = event_bus::Timestamp::now_ms() / 1000;
    let (ticket, use_by) = tickets.issue(p, now);
    Ok(Json(json!({"ticket": ticket, "use_by": use_by, "expires_in": use_by - now})).into_response())
}

/// Query of `GET /api/dev/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenQuery {
    sub: Option<String>,
    role: Option<String>,
    channels: Option<String>,
    ttl: Option<u64>,
}

/// `GET /api/dev/token?sub=dev&role=admin&channels=*&ttl=43200` (`AUTH_MODE=dev` only, 404
/// otherwise): a signed token for whoever asks, so the dashboard and a developer's scripts use
/// the same authenticated paths as production.
pub async fn dev_token(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<DevTokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    if state.auth().mode() != AuthMode::Dev {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_dev_mode",
            message: "tokens are handed out only with AUTH_MODE=dev".into(),
            retry_after: None,
        });
    }
    let axum::extract::Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let sub = q.sub.unwrap_or_else(|| "dev".into());
    notifications::check_user(&sub).map_err(|e| ApiError::bad_request("bad_user", e))?;
    let role = match q.role.as_deref() {
        None => Some("admin"),
        Some("admin") => Some("admin"),
        Some("publisher") => Some("publisher"),
        Some("" | "none") => None,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_role",
                format!("role={other:?}: admin, publisher or none"),
            ))
        }
    };
    let channels = match q.channels.as_deref() {
        None | Some("*") => json!("*"),
        Some(list) => {
            let mut out = Vec::new();
            // Exactly as the document says: names between commas, none empty; "" grants none.
            for name in list.split(',').filter(|_| !list.is_empty()) {
                Channel::new(name).map_err(|e| ApiError::bad_request("unknown_channel", e.to_string()))?;
                out.push(name.to_owned());
            }
            json!(out)
        }
    };
    let ttl = q.ttl.unwrap_or(12 * 3600);
    if !(10..=7 * 86_400).contains(&ttl) {
        return Err(ApiError::bad_request("bad_ttl", "ttl: 10 to 604800 seconds"));
    }
    let (token, exp) = state
        .auth()
        .mint(&sub, role, channels, ttl)
        .expect("dev mode has a minting key");
    Ok(Json(json!({"token": token, "expires_at": exp, "sub": sub})).into_response())
}
