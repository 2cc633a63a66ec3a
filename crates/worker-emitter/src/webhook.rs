//! `POST /webhooks/orders/{marketplace}`: a marketplace's order notification, signed with
//! HMAC-SHA256 over `<timestamp>.<raw body>` with that marketplace's secret, checked and
//! enqueued as an `orders` job. The timestamp (unix seconds, in its own header) is signed, and
//! one further than `signature_tolerance_secs` from now is refused: a captured delivery cannot
//! be replayed later. Bad or old signature: 401; bad body: 400 saying what is wrong; nothing is
//! enqueued for either. The same order delivered three times is three jobs and one event (the
//! orders processor remembers orders).

use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use bullmq::{JobOptions, Queue};
use hmac::{KeyInit, Mac};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::{processors::orders::OrderJob, runner::Emitter};

/// What the intake needs: the emitter (config, metrics) and the queue it adds to.
#[derive(Clone)]
pub struct Intake {
    /// Config and metrics.
    pub emitter: Emitter,
    /// The orders queue.
    pub queue: std::sync::Arc<Queue>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").field("queue", &self.queue.name()).finish()
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"code": code, "message": message.into()}))).into_response()
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature a marketplace sends with `timestamp` (unix seconds, as sent in the timestamp
/// header): `sha256=` and the hex of HMAC-SHA256(secret, `<timestamp>.<body>`).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks `signature` (hex, optionally `sha256=`-prefixed) against HMAC-SHA256(secret,
/// `<timestamp>.<body>`), in constant time.
pub fn signature_ok(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let hex_sig = signature.trim().strip_prefix("sha256=").unwrap_or(signature.trim());
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&sig).is_ok()
}

/// Whether a signed `timestamp` is within `tolerance` seconds of `now` (both unix seconds);
/// Err says what is wrong with it.
pub fn timestamp_ok(timestamp: &str, now: u64, tolerance: u64) -> Result<(), String> {
    let t: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| format!("{timestamp:?} is not unix seconds"))?;
    if t.abs_diff(now) > tolerance {
        return Err(format!(
            "the signed timestamp {t} is {} s from now; at most {tolerance} s are accepted (a replay, or a clock off)",
            t.abs_diff(now)
        ));
    }
    Ok(())
}

/// The handler.
pub async fn orders(
    State(intake): State<Intake>,
    Path(marketplace): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cfg = &intake.emitter.config().webhooks;
    let m = &intake.emitter.metrics().webhooks;
    let answer = |status: StatusCode, r: Response| {
        let label = if cfg.secrets.contains_key(&marketplace) {
            marketplace.as_str()
        } else {
            "unknown"
        };
        m.with_label_values(&[label, status.as_str()]).inc();
        r
    };
    let Some(secret) = cfg.secrets.get(&marketplace) else {
        let r = error(
            StatusCode::NOT_FOUND,
            "unknown_marketplace",
            format!("no webhook is configured for marketplace {marketplace:?}"),
        );
        return answer(StatusCode::NOT_FOUND, r);
    };
    // Refused at the limit, before the whole body is read.
    let limited = http_body_util::Limited::new(body, cfg.max_body_bytes);
    let Ok(collected) = tokio::time::timeout(service_kit::http::REQUEST_TIMEOUT, limited.collect()).await else {
        let r = error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the body did not arrive in time",
        );
        return answer(StatusCode::REQUEST_TIMEOUT, r);
    };
    let bytes = match collected {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let r = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {} bytes", cfg.max_body_bytes),
            );
            return answer(StatusCode::PAYLOAD_TOO_LARGE, r);
        }
    };
    let Some(signature) = headers.get(&cfg.signature_header).and_then(|v| v.to_str().ok()) else {
        let r = error(
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            format!(
                "the {} header with HMAC-SHA256(secret, body) in hex is required",
                cfg.signature_header
            ),
        );
        return answer(StatusCode::UNAUTHORIZED, r);
    };
    let Some(timestamp) = headers.get(&cfg.timestamp_header).and_then(|v| v.to_str().ok()) else {
        let r = error(
            StatusCode::UNAUTHORIZED,
            "missing_timestamp",
            format!(
                "the {} header with the unix time of the signature is required",
                cfg.timestamp_header
            ),
        );
        return answer(StatusCode::UNAUTHORIZED, r);
    };
    let now = event_bus::Timestamp::now_ms() / 1000;
    if let Err(e) = timestamp_ok(timestamp, now, cfg.signature_tolerance_secs) {
        return answer(
            StatusCode::UNAUTHORIZED,
            error(StatusCode::UNAUTHORIZED, "stale_signature", e),
        );
    }
    if !signature_ok(secret.as_bytes(), timestamp.trim(), &bytes, signature) {
        let r = error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the signature does not match `<timestamp>.<body>`",
        );
        return answer(StatusCode::UNAUTHORIZED, r);
    }
    let mut data: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return answer(
                StatusCode::BAD_REQUEST,
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the body must be a JSON object",
                ),
            )
        }
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("the body is not JSON: {e}"),
                ),
            )
        }
    };
    // The marketplace's trace, if its delivery names one, goes on with the job (the job's span
    // and its event continue it).
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        if tp.parse::<event_bus::Traceparent>().is_ok() && data.get("traceparent").is_none() {
            data["traceparent"] = json!(tp);
        }
    }
    match data.get("marketplace") {
        None => data["marketplace"] = json!(marketplace),
        Some(Value::String(m)) if *m == marketplace => {}
        Some(other) => {
            let r = error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("marketplace: the body says {other}, the URL says {marketplace:?}"),
            );
            return answer(StatusCode::BAD_REQUEST, r);
        }
    }
    if let Err(e) = OrderJob::from_data(&data) {
        return answer(
            StatusCode::BAD_REQUEST,
            error(StatusCode::BAD_REQUEST, "invalid_order", e.to_string()),
        );
    }
    let opts = JobOptions {
        attempts: Some(cfg.job_attempts),
        backoff: Some(bullmq::types::BackoffStrategy::Exponential(cfg.job_backoff_ms)),
        ..Default::default()
    };
    match intake.queue.add("order", data).options(opts).await {
        Ok(job) => answer(
            StatusCode::ACCEPTED,
            (StatusCode::ACCEPTED, Json(json!({"queued": true, "job_id": job.id()}))).into_response(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not enqueue a webhook order");
            let r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_unavailable",
                "the order could not be queued; the marketplace should deliver it again",
            );
            answer(StatusCode::SERVICE_UNAVAILABLE, r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let secret = b"0123456789abcdef";
        let body = br#"{"orderId":"1"}"#;
        let t = "1796130000";
        let good = sign(secret, t, body).trim_start_matches("sha256=").to_owned();
        assert!(signature_ok(secret, t, body, &good));
        assert!(signature_ok(secret, t, body, &format!("sha256={good}")));
        assert!(!signature_ok(secret, t, b"{}", &good));
        assert!(
            !signature_ok(secret, "1796130001", body, &good),
            "the timestamp is signed"
        );
        assert!(!signature_ok(secret, t, body, "zz"));
        assert!(!signature_ok(b"another-secret-value", t, body, &good));
    }

    #[test]
    fn timestamps_far_from_now_are_refused() {
        assert!(timestamp_ok("1000", 1300, 300).is_ok());
        assert!(timestamp_ok("1600", 1300, 300).is_ok());
        assert!(timestamp_ok("999", 1300, 300).is_err());
        assert!(timestamp_ok("1601", 1300, 300).is_err());
        assert!(timestamp_ok("-5", 1300, 300).is_err());
        assert!(timestamp_ok("", 1300, 300).is_err());
    }
}
