//! A Redis bus on a test's own server, with the default channels or a test's own settings.

use event_bus::{BusConfig, RedisBus};

use crate::RedisServer;

/// A bus on `redis` with the default settings.
pub async fn redis_bus(redis: &RedisServer) -> RedisBus {
    redis_bus_with(redis, |_| {}).await
}

/// A bus on `redis`, with `tweak` applied to the default settings first.
pub async fn redis_bus_with(redis: &RedisServer, tweak: impl FnOnce(&mut BusConfig)) -> RedisBus {
    let mut config = BusConfig {
        redis_url: Some(redis.url()),
        ..Default::default()
    };
    tweak(&mut config);
    RedisBus::connect(config)
        .await
        .expect("connect the bus to the test's redis-server")
}
