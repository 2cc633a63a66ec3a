//! Helpers shared by the worker-emitter's integration tests.

use event_bus::{BusConfig, RedisBus};
use testkit::RedisServer;

/// A bus on the test's redis-server, to watch what the worker emits.
pub async fn bus(redis: &RedisServer) -> RedisBus {
    RedisBus::connect(BusConfig {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await
    .unwrap()
}
