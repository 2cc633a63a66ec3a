//! Aggregator configuration (`docs/reference.md`, "Configuration"): defaults, `CONFIG_FILE`, then the environment.

use std::time::Duration;

use event_bus::BusConfig;
use serde::{Deserialize, Serialize};

/// Everything the aggregator reads at start-up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Listen address for `/metrics`, `/healthz`, `/readyz` (`HTTP_ADDR`).
    pub http_addr: String,
    /// This replica's name, the holder written into leases (`INSTANCE_ID`; default: host name).
    pub instance_id: String,
    /// Days a daily hash is kept after its day ends.
    pub retention_days: u32,
    /// Stream entries read per round.
    pub batch: usize,
    /// How often a channel at its head looks for new entries, in ms.
    pub poll_interval_ms: u64,
    /// How often the gateways' figures are folded in, in ms.
    pub gateway_interval_ms: u64,
    /// A lease not renewed for this long passes to another replica, in ms.
    pub lease_ttl_ms: u64,
    /// Replicas split the work with leases. `false`: every replica works every channel; the
    /// totals stay exact (the markers fence), only the work is done twice.
    pub leases: bool,
    /// The bus (`REDIS_URL`, `REALTIME_PREFIX`, channels).
    pub bus: BusConfig,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            http_addr: "0.0.0.0:9102".into(),
            instance_id: service_kit::default_instance("stats-aggregator"),
            retention_days: 90,
            batch: 1_000,
            poll_interval_ms: 250,
            gateway_interval_ms: 5_000,
            lease_ttl_ms: 10_000,
            leases: true,
            bus: BusConfig::default(),
        }
    }
}

/// The documented variable names (`docs/reference.md`, "Configuration") and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("HTTP_ADDR", "http_addr"),
    ("REDIS_URL", "bus.redis_url"),
    ("INSTANCE_ID", "instance_id"),
    ("REALTIME_PREFIX", "bus.prefix"),
    ("STATS_RETENTION_DAYS", "retention_days"),
];

impl AggregatorConfig {
    /// Checks what serde cannot; the error names the key and the value.
    pub fn validate(&self) -> Result<(), String> {
        service_kit::check_http_addr(&self.http_addr)?;
        service_kit::check_instance_id(&self.instance_id)?;
        if !(1..=3660).contains(&self.retention_days) {
            return Err(format!(
                "retention_days (STATS_RETENTION_DAYS): {} is outside 1..=3660",
                self.retention_days
            ));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(format!("batch: {} is outside 1..=10000", self.batch));
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return Err(format!(
                "poll_interval_ms: {} is outside 10..=60000",
                self.poll_interval_ms
            ));
        }
        if !(100..=600_000).contains(&self.gateway_interval_ms) {
            return Err(format!(
                "gateway_interval_ms: {} is outside 100..=600000",
                self.gateway_interval_ms
            ));
        }
        if self.lease_ttl_ms < 3 * self.poll_interval_ms.max(100) || self.lease_ttl_ms > 600_000 {
            return Err(format!(
                "lease_ttl_ms: {} must be at least 3 × poll_interval_ms (and at least 300) and at most 600000",
                self.lease_ttl_ms
            ));
        }
        self.bus.validate().map_err(|e| format!("bus.{}: {}", e.key, e.message))
    }

    /// The poll interval.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The lease time to live.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<AggregatorConfig, String> {
        testkit::config::load(
            &AggregatorConfig::default(),
            ENV_ALIASES,
            &[],
            pairs,
            AggregatorConfig::validate,
        )
    }

    #[test]
    fn contract_names_and_bad_values() {
        let c = load(&[("HTTP_ADDR", "127.0.0.1:9999"), ("INSTANCE_ID", "agg-1")]).unwrap();
        assert_eq!(
            (c.http_addr.as_str(), c.instance_id.as_str()),
            ("127.0.0.1:9999", "agg-1")
        );
        for (var, value, key) in [
            ("HTTP_ADDR", "nowhere", "HTTP_ADDR"),
            ("STATS_RETENTION_DAYS", "0", "retention_days"),
            ("STATS_RETENTION_DAYS", "many", "retention_days"),
            ("RAKUDA__BATCH", "0", "batch"),
            ("RAKUDA__LEASE_TTL_MS", "10", "lease_ttl_ms"),
            ("REDIS_URL", "http://x", "redis_url"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }
}
