//! What every state-changing handler shares: reading a body within its limit, and the
//! per-caller rate limit of publishing (429 with `Retry-After`).

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

/// Per-caller token buckets for publishing: `rate` events per second sustained, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl RateLimiter {
    /// A limiter of `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            buckets: Default::default(),
        }
    }

    /// Takes `n` from `key`'s bucket, or says in how many seconds there will be enough.
    pub fn take(&self, key: &str, n: f64) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let mut b = self.buckets.lock().unwrap();
        if b.len() > 10_000 {
            b.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 60);
        }
        let (tokens, at) = b.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if n <= *tokens {
            *tokens -= n;
            Ok(())
        } else {
            Err(((n - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}
