//! `churn`: connections that come and go leave nothing behind. One gateway on one
//! redis-server (`AUTH_MODE=jwt`, so each stream is a user's and follows the user's
//! partition of the private channel), `connections` streams of `users` users opened over
//! `over`, each held a fraction of a second to a second and a half, then closed. Before (after
//! a warm-up of one stream per user) and after, once `follow_grace_ms` has passed: the
//! gateway's RSS and Redis's shard channels (`PUBSUB SHARDCHANNELS`: every partition and
//! channel followed). Nothing may be left: the shard channels back to none, the RSS back near
//! where it was (an allocator keeps some of what was freed, not a share per connection).

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::{process::Service, sse::SseStream, RedisServer};

/// The gateways' HS256 key in the scenarios with users (`churn`, `presence`).
pub(crate) const SECRET: &str = "churn-benchmark-secret-of-32-characters";
const GRACE_MS: u64 = 500;

/// A token of `user` for `orders`, an hour long.
pub(crate) fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp, "channels": ["orders"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a token")
}

fn shard_channels(redis: &RedisServer) -> usize {
    redis
        .cli(&["PUBSUB", "SHARDCHANNELS"])
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Opens `count` streams over `over` (user `i % users` each), each held 200 to 1,500 ms;
/// returns how many failed to open or to send their first message, and the most shard
/// channels seen meanwhile.
async fn churn(base: &str, redis: &RedisServer, count: usize, users: usize, over: Duration) -> (usize, usize) {
    let failed = Arc::new(AtomicUsize::new(0));
    let tokens: Vec<String> = (0..users).map(|u| token(&format!("user-{u}"))).collect();
    let period = over / count as u32;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    let mut peak = 0;
    for i in 0..count {
        tokio::time::sleep_until(start + period * i as u32).await;
        if i % 500 == 0 {
            peak = peak.max(shard_channels(redis));
        }
        let url = format!(
            "{base}/api/realtime/events?channels=orders&access_token={}",
            tokens[i % users]
        );
        let failed = failed.clone();
        let hold = Duration::from_millis(200 + (i as u64 * 7919) % 1300);
        tasks.push(tokio::spawn(async move {
            let ok = match SseStream::connect(&url, None).await {
                Ok(mut s) if s.status == 200 => s.next_message(Duration::from_secs(10)).await.is_some(),
                _ => false,
            };
            if !ok {
                failed.fetch_add(1, Relaxed);
            }
            tokio::time::sleep(hold).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (failed.load(Relaxed), peak)
}

/// Waits until Redis has no shard channel left (bounded); how many are left.
async fn settled(redis: &RedisServer) -> usize {
    let until = Instant::now() + Duration::from_millis(GRACE_MS) + Duration::from_secs(10);
    loop {
        let n = shard_channels(redis);
        if n == 0 || Instant::now() > until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run; a JSON line.
pub async fn run(
    gateway_bin: &Path,
    env: &HashMap<String, String>,
    connections: usize,
    users: usize,
    over: Duration,
) -> Value {
    let redis = RedisServer::start().expect("redis-server");
    let mut env = env.clone();
    env.insert("REDIS_URL".into(), redis.url());
    env.insert("AUTH_MODE".into(), "jwt".into());
    env.insert("JWT_HS256_SECRET".into(), SECRET.into());
    env.insert("RAKUDA__FOLLOW_GRACE_MS".into(), GRACE_MS.to_string());
    let gw = Service::start(gateway_bin, &env).expect("gateway");
    let base = gw.base();
    // A warm-up of one stream per user: the allocator's pools and the tables at their size.
    let (warm_failed, _) = churn(&base, &redis, users, users, Duration::from_secs(5)).await;
    let before_channels = settled(&redis).await;
    let before = crate::rss_kib(&gw);
    let (failed, peak) = churn(&base, &redis, connections, users, over).await;
    let after_channels = settled(&redis).await;
    let after = crate::rss_kib(&gw);
    json!({"scenario": "churn", "connections": connections, "users": users, "seconds": over.as_secs(),
           "failed": failed + warm_failed, "shard_channels_peak": peak,
           "shard_channels_before": before_channels, "shard_channels_after": after_channels,
           "rss_kib_before": before, "rss_kib_after": after,
           "rss_growth_bytes_per_connection": ((after as f64 - before as f64) * 1024.0 / connections as f64).round()})
}
