//! The operator's dashboard at `/`, and the client module at `/realtime-client.js`: HTML, CSS
//! and JS compiled into the binary (no build step). Served with `Cache-Control: no-cache` and
//! an `ETag`, so a new binary's files are picked up at once and unchanged ones cost a 304.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

/// The embedded files: path, content type, body.
pub const ASSETS: [(&str, &str, &str); 4] = [
    ("/", "text/html; charset=utf-8", include_str!("dashboard/index.html")),
    (
        "/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/dashboard.css"),
    ),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dashboard.js"),
    ),
    (
        "/realtime-client.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../clients/js/src/realtime-client.js"),
    ),
];

fn etag(body: &str) -> String {
    // FNV-1a: a stable fingerprint of the embedded file.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn serve(content_type: &'static str, body: &str, headers: &HeaderMap) -> Response {
    let tag = etag(body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_str(&tag).expect("etag is ASCII")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.to_owned(),
    )
        .into_response()
}

/// `/`, `/dashboard.css`, `/dashboard.js`, `/realtime-client.js`. `offers` (space-separated:
/// `dev-tokens`, `dev-sinks`) goes into the page's `<meta name="rakuda-offers">`, so the
/// dashboard asks only for what this process serves.
pub fn routes<S: Clone + Send + Sync + 'static>(offers: &str) -> Router<S> {
    ASSETS.iter().fold(Router::new(), |r, &(path, content_type, body)| {
        let body: std::sync::Arc<str> = body.replace("__OFFERS__", offers).into();
        r.route(
            path,
            get(move |h: HeaderMap| async move { serve(content_type, &body, &h) }),
        )
    })
}
