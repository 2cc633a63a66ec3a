//! What every state-changing handler shares: reading a body within its limit and time, and
//! the answer past the per-caller rate limit of publishing (429 with `Retry-After`).

use axum::{body::Bytes, http::StatusCode};

use crate::{config::GatewayConfig, error::ApiError};

/// Reads a request body of at most `max_body_bytes` within `request_timeout_ms`; a longer one
/// is refused (413, JSON) as soon as the limit is passed, without reading the rest, and a
/// slower one too (408).
pub async fn read_body(config: &GatewayConfig, body: axum::body::Body) -> Result<Bytes, ApiError> {
    let max = config.max_body_bytes;
    match tokio::time::timeout(config.request_timeout(), axum::body::to_bytes(body, max)).await {
        Ok(read) => read.map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!("the request body is larger than {max} bytes"),
            retry_after: None,
        }),
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "request_timeout",
            message: format!(
                "the request body did not arrive within {} ms",
                config.request_timeout_ms
            ),
            retry_after: None,
        }),
    }
}

/// 429 for a caller past its publishing rate (`rate` per second): `n` events now, enough in
/// `wait` seconds.
pub fn rate_limited(rate: f64, n: usize, wait: u64) -> ApiError {
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "rate_limited",
        message: format!(
            "{n} events at once is more than this caller may publish now ({} per second); retry in {wait} s",
            rate
        ),
        retry_after: Some(wait),
    }
}
