//! Worker configuration (`docs/reference.md`, "Configuration" and "Job queues"): defaults, `CONFIG_FILE`, then the environment.
//! Webhook secrets come from the file or the environment (`RAKUDA__WEBHOOKS__SECRETS__EBAY=...`),
//! never from the repository, and are never printed.

use std::collections::BTreeMap;

use event_bus::BusConfig;
use serde::{Deserialize, Serialize};

/// Everything the worker reads at start-up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmitterConfig {
    /// Listen address for webhooks, `/metrics`, `/healthz`, `/readyz` (`HTTP_ADDR`).
    pub http_addr: String,
    /// This replica's name (`INSTANCE_ID`), also the BullMQ worker name.
    pub instance_id: String,
    /// BullMQ key prefix (`bull`, like Node's default).
    pub queue_prefix: String,
    /// The processors to run, comma-separated kinds: `inventory,orders,pricing,listings`
    /// (`PROCESSORS`).
    pub processors: String,
    /// Queue names per kind (default: the kind's name, `docs/reference.md`, "Job queues").
    pub queues: QueueNames,
    /// Jobs processed at once, per queue (`WORKER_CONCURRENCY`). Jobs mostly wait on Redis
    /// round trips; 32 measured best on 2 cores (`make bench`: 8 → 3.9k jobs/s, 32 → 6.3k).
    pub concurrency: usize,
    /// A job's lock, renewed while it runs; a job whose lock expired is "stalled", in ms.
    pub lock_duration_ms: u64,
    /// How often stalled jobs are looked for, in ms.
    pub stalled_interval_ms: u64,
    /// Times a job may stall (its worker died) before it fails.
    pub max_stalled_count: u32,
    /// On SIGTERM, how long in-flight jobs may take to finish before the process exits (an
    /// unfinished job's lock expires and another worker takes it), in ms.
    pub shutdown_grace_ms: u64,
    /// Producer versions (`meta.version` of a queue) this worker was tested with,
    /// comma-separated (`ACCEPTED_PRODUCERS`).
    pub accepted_producers: String,
    /// Conflicting state changes tolerated in one job before it is retried later.
    pub max_conflicts: u32,
    /// How long an order is remembered for "once per order", in days.
    pub order_memory_days: u64,
    /// The inventory processor's HTTP source checks.
    pub inventory: InventorySettings,
    /// The webhook intake.
    pub webhooks: WebhookSettings,
    /// The bus (`REDIS_URL`, `REALTIME_PREFIX`).
    pub bus: BusConfig,
}

/// Queue names per kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueNames {
    /// Inventory checks.
    pub inventory: String,
    /// Marketplace orders.
    pub orders: String,
    /// Price sync.
    pub pricing: String,
    /// Listing updates.
    pub listings: String,
}

impl Default for QueueNames {
    fn default() -> Self {
        QueueNames {
            inventory: "inventory".into(),
            orders: "orders".into(),
            pricing: "pricing".into(),
            listings: "listings".into(),
        }
    }
}

/// How the inventory processor reads a source's JSON answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventorySettings {
    /// Timeout of one source request (connect and answer), in ms.
    pub http_timeout_ms: u64,
    /// Largest answer read, in bytes (counted as it streams in: a larger one is cut off).
    pub max_response_bytes: usize,
    /// Let `sourceUrl` reach non-public addresses: loopback, private, link-local (cloud
    /// metadata), unique-local and the like. Off by default: a job's URL comes from whoever
    /// fills the queue, and must not reach into the worker's own network.
    pub allow_private_sources: bool,
    /// Path of the availability (a boolean, or a stock count) in the answer, dotted.
    pub available_field: String,
    /// Path of the price (a number or a numeric string).
    pub price_field: String,
    /// Path of the currency; when absent, `default_currency`.
    pub currency_field: String,
    /// Currency of sources that do not say.
    pub default_currency: String,
}

impl Default for InventorySettings {
    fn default() -> Self {
        InventorySettings {
            http_timeout_ms: 5_000,
            max_response_bytes: 1 << 20,
            allow_private_sources: false,
            available_field: "available".into(),
            price_field: "price".into(),
            currency_field: "currency".into(),
            default_currency: "USD".into(),
        }
    }
}

/// `POST /webhooks/orders/{marketplace}`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// HMAC-SHA256 secret per marketplace; a marketplace without one is refused (404).
    pub secrets: BTreeMap<String, String>,
    /// The header carrying the signature: hex of HMAC-SHA256(secret, `<timestamp>.<body>`),
    /// optionally prefixed `sha256=`.
    pub signature_header: String,
    /// The header carrying the signed timestamp, unix seconds.
    pub timestamp_header: String,
    /// A signed timestamp further than this from now (either way) is refused, in seconds.
    pub signature_tolerance_secs: u64,
    /// Largest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Attempts of an enqueued order job.
    pub job_attempts: u32,
    /// Exponential backoff base of an enqueued order job, in ms.
    pub job_backoff_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            secrets: BTreeMap::new(),
            signature_header: "x-signature".into(),
            timestamp_header: "x-signature-timestamp".into(),
            signature_tolerance_secs: 300,
            max_body_bytes: 256 * 1024,
            job_attempts: 5,
            job_backoff_ms: 1_000,
        }
    }
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field(
                "secrets",
                &self.secrets.keys().map(|k| (k, "<redacted>")).collect::<Vec<_>>(),
            )
            .field("signature_header", &self.signature_header)
            .field("timestamp_header", &self.timestamp_header)
            .field("signature_tolerance_secs", &self.signature_tolerance_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("job_attempts", &self.job_attempts)
            .field("job_backoff_ms", &self.job_backoff_ms)
            .finish()
    }
}

impl Default for EmitterConfig {
    fn default() -> Self {
        EmitterConfig {
            http_addr: "0.0.0.0:9101".into(),
            instance_id: service_kit::default_instance("worker-emitter"),
            queue_prefix: "bull".into(),
            processors: KINDS.join(","),
            queues: QueueNames::default(),
            concurrency: 32,
            lock_duration_ms: 30_000,
            stalled_interval_ms: 30_000,
            max_stalled_count: 1,
            shutdown_grace_ms: 20_000,
            accepted_producers: "bullmq:6.7.0".into(),
            max_conflicts: 16,
            order_memory_days: 30,
            inventory: InventorySettings::default(),
            webhooks: WebhookSettings::default(),
            bus: BusConfig::default(),
        }
    }
}

fn split(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// The built-in processor kinds.
pub const KINDS: [&str; 4] = ["inventory", "orders", "pricing", "listings"];

/// The documented variable names (`docs/reference.md`, "Configuration") and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("HTTP_ADDR", "http_addr"),
    ("REDIS_URL", "bus.redis_url"),
    ("INSTANCE_ID", "instance_id"),
    ("REALTIME_PREFIX", "bus.prefix"),
    ("QUEUE_PREFIX", "queue_prefix"),
    ("WORKER_CONCURRENCY", "concurrency"),
    ("PROCESSORS", "processors"),
    ("ACCEPTED_PRODUCERS", "accepted_producers"),
];

impl EmitterConfig {
    /// The processor kinds to run.
    pub fn kinds(&self) -> Vec<&str> {
        split(&self.processors)
    }

    /// The accepted producer versions.
    pub fn producers(&self) -> Vec<&str> {
        split(&self.accepted_producers)
    }

    /// The queue name of a kind.
    pub fn queue_of(&self, kind: &str) -> &str {
        match kind {
            "inventory" => &self.queues.inventory,
            "orders" => &self.queues.orders,
            "pricing" => &self.queues.pricing,
            _ => &self.queues.listings,
        }
    }

    /// Checks what serde cannot; the error names the key and the value.
    pub fn validate(&self) -> Result<(), String> {
        service_kit::check_http_addr(&self.http_addr)?;
        service_kit::check_instance_id(&self.instance_id)?;
        if self.bus.redis_url.is_none() {
            return Err("redis_url (REDIS_URL): required, the job queues live in Redis".into());
        }
        if self.queue_prefix.is_empty() || self.queue_prefix.contains(':') {
            return Err(format!(
                "queue_prefix (QUEUE_PREFIX): {:?} must be non-empty without ':'",
                self.queue_prefix
            ));
        }
        if !(1..=86_400).contains(&self.webhooks.signature_tolerance_secs) {
            return Err(format!(
                "webhooks.signature_tolerance_secs: {} is outside 1..=86400",
                self.webhooks.signature_tolerance_secs
            ));
        }
        if self.kinds().is_empty() {
            return Err("processors (PROCESSORS): name at least one of inventory, orders, pricing, listings".into());
        }
        for p in self.kinds() {
            if !KINDS.contains(&p) {
                return Err(format!(
                    "processors (PROCESSORS): {p:?} is not one of inventory, orders, pricing, listings"
                ));
            }
        }
        for (k, q) in [
            ("inventory", &self.queues.inventory),
            ("orders", &self.queues.orders),
            ("pricing", &self.queues.pricing),
            ("listings", &self.queues.listings),
        ] {
            if q.is_empty() || q.contains(':') {
                return Err(format!("queues.{k}: {q:?} must be non-empty without ':'"));
            }
        }
        if !(1..=1_000).contains(&self.concurrency) {
            return Err(format!(
                "concurrency (WORKER_CONCURRENCY): {} is outside 1..=1000",
                self.concurrency
            ));
        }
        if self.lock_duration_ms < 1_000 {
            return Err(format!("lock_duration_ms: {} is below 1000", self.lock_duration_ms));
        }
        if self.stalled_interval_ms < 100 {
            return Err(format!(
                "stalled_interval_ms: {} is below 100",
                self.stalled_interval_ms
            ));
        }
        if self.producers().is_empty() {
            return Err(
                "accepted_producers (ACCEPTED_PRODUCERS): list at least one producer version, e.g. bullmq:6.7.0".into(),
            );
        }
        if self.max_conflicts == 0 {
            return Err("max_conflicts: must be at least 1".into());
        }
        if self.inventory.http_timeout_ms == 0 || self.inventory.http_timeout_ms > 120_000 {
            return Err(format!(
                "inventory.http_timeout_ms: {} is outside 1..=120000",
                self.inventory.http_timeout_ms
            ));
        }
        crate::job::check_currency("inventory.default_currency", &self.inventory.default_currency)
            .map_err(|e| e.to_string())?;
        for (m, s) in &self.webhooks.secrets {
            if s.len() < 16 {
                return Err(format!("webhooks.secrets.{m}: shorter than 16 characters"));
            }
        }
        if self.webhooks.job_attempts == 0 {
            return Err("webhooks.job_attempts: must be at least 1".into());
        }
        self.bus.validate().map_err(|e| format!("bus.{}: {}", e.key, e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<EmitterConfig, String> {
        let fixed = [("REDIS_URL", "redis://127.0.0.1:6379")];
        testkit::config::load(
            &EmitterConfig::default(),
            ENV_ALIASES,
            &fixed,
            pairs,
            EmitterConfig::validate,
        )
    }

    #[test]
    fn secrets_from_the_environment_are_never_printed() {
        let c = load(&[("RAKUDA__WEBHOOKS__SECRETS__EBAY", "0123456789abcdef-secret")]).unwrap();
        assert_eq!(c.webhooks.secrets["ebay"], "0123456789abcdef-secret");
        assert!(!format!("{c:?}").contains("0123456789abcdef-secret"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (var, value, key) in [
            ("WORKER_CONCURRENCY", "0", "concurrency"),
            ("WORKER_CONCURRENCY", "many", "concurrency"),
            ("REDIS_URL", "", "redis_url"),
            ("PROCESSORS", "orders,stock", "PROCESSORS"),
            ("RAKUDA__WEBHOOKS__SECRETS__EBAY", "short", "webhooks.secrets.ebay"),
            ("HTTP_ADDR", "x", "HTTP_ADDR"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }
}
