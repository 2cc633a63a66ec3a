//! Rate limits per caller: publishing (`auth.publish_rate_per_sec`) and resuming streams
//! (`resume_rate_per_sec`); and a connection's place among those that are no stream yet
//! (`max_pending_connections`).

use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

/// The most events one publish request carries (`POST /api/realtime/publish`); a caller's
/// `auth.publish_burst` must take at least this many.
pub const MAX_PUBLISH_BATCH: usize = 1000;

/// A connection's place among those that are not an authenticated stream
/// (`max_pending_connections`): taken at accept, held while the connection waits for a
/// request, serves API requests or idles between them (keep-alive), and while a WebSocket
/// waits for its `auth` message; given back when the connection becomes a stream (whose own
/// limits then count it) or ends. Cloned into each request's extensions, so the handler that
/// opens a stream can give it back.
#[derive(Clone, Debug)]
pub struct Pending(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Pending {
    /// The connection's place, taken at accept.
    pub fn new(permit: OwnedSemaphorePermit) -> Pending {
        Pending(Arc::new(Mutex::new(Some(permit))))
    }

    /// Gives the place back (the connection is a stream now); once is enough.
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Per-caller token buckets: `rate` per second sustained, `burst` at once. Bounded: past
/// 10,000 callers, those idle for a minute are forgotten.
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
