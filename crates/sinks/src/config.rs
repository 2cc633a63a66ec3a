//! The sinks' configuration: routes (which events, to which destinations, in what words) and
//! destinations (where, with which credentials), checked before anything runs; every error
//! names the key. Destinations come from here only: no URL is ever taken from an event or a
//! request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod destinations;

pub use destinations::DestinationConfig;

pub use crate::secret::Secret;
use crate::{
    route::{Matcher, Route},
    template::Template,
};

/// How deliveries are tried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Attempts of one delivery before it is a dead letter.
    pub max_attempts: u32,
    /// A delivery queued longer ago than this, in seconds, is a dead letter (also while its
    /// destination is disabled: checked as each new delivery is queued).
    pub max_age_secs: u64,
    /// Deliveries that may wait per destination; past it, the oldest go to the dead letters as
    /// new ones are queued (`sinks_outbox_overflow_total`), so a disabled destination's outbox
    /// stays bounded.
    pub max_backlog: u64,
    /// Each request's deadline (connect, send, answer), in ms.
    pub timeout_ms: u64,
    /// The first retry's delay, in ms; doubled per attempt, with 20% jitter.
    pub backoff_initial_ms: u64,
    /// The longest retry delay, in ms.
    pub backoff_max_ms: u64,
    /// How often an idle destination looks for new deliveries, and a channel for new events, in ms.
    pub poll_ms: u64,
    /// Leases (one replica reads a channel, one delivers to a destination), in ms. At least
    /// three times `timeout_ms`: a request starts with at least two thirds of the lease left
    /// (it is renewed every third), and the longest request (SMTP's) takes twice the timeout,
    /// so no other replica can take a delivery that is still being sent, even if every
    /// renewal during it failed.
    pub lease_ttl_ms: u64,
    /// 401, 403 and 429 answers a destination may get in a 10-minute window (all replicas
    /// together); past it, it waits for the next window. Discord bans an IP after 10,000.
    pub invalid_budget: u64,
    /// Requests per second per destination (all replicas together), by destination name;
    /// default per kind: slack 1, discord 2, line 50, webhook 20, inbox 50,
    /// email 1, web_push 50.
    pub rates: BTreeMap<String, f64>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 8,
            max_age_secs: 86_400,
            max_backlog: 100_000,
            timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            poll_ms: 100,
            lease_ttl_ms: 30_000,
            invalid_budget: 100,
            rates: BTreeMap::new(),
        }
    }
}

/// The sinks' configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// Listen address for `/metrics`, `/healthz`, `/readyz` (`HTTP_ADDR`).
    pub http_addr: String,
    /// This replica's name (`INSTANCE_ID`), the holder of its leases.
    pub instance_id: String,
    /// The bus (`REDIS_URL`, `REALTIME_PREFIX`): Redis, where the sinks keep their state too.
    pub bus: event_bus::BusConfig,
    /// Which events go where.
    pub routes: BTreeMap<String, Route>,
    /// Where they go.
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// How deliveries are tried.
    pub delivery: DeliverySettings,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            http_addr: "0.0.0.0:9103".into(),
            instance_id: service_instance(),
            bus: event_bus::BusConfig::default(),
            routes: BTreeMap::new(),
            destinations: BTreeMap::new(),
            delivery: DeliverySettings::default(),
        }
    }
}

fn service_instance() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "sinks".into())
}

/// The documented variable names and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("HTTP_ADDR", "http_addr"),
    ("REDIS_URL", "bus.redis_url"),
    ("INSTANCE_ID", "instance_id"),
    ("REALTIME_PREFIX", "bus.prefix"),
];

impl SinksConfig {
    /// Checks everything serde cannot: that every route's destinations exist, its conditions
    /// and template parse, its window is at most an hour, every secret can be read and every URL
    /// is one the sinks may call. The error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.bus.validate().map_err(|e| format!("bus.{e}"))?;
        let d = &self.delivery;
        for (key, v, min, max) in [
            ("max_attempts", u64::from(d.max_attempts), 1, 100),
            ("max_age_secs", d.max_age_secs, 60, 30 * 86_400),
            ("max_backlog", d.max_backlog, 10, 10_000_000),
            ("timeout_ms", d.timeout_ms, 100, 120_000),
            ("backoff_initial_ms", d.backoff_initial_ms, 10, 3_600_000),
            ("backoff_max_ms", d.backoff_max_ms, d.backoff_initial_ms, 86_400_000),
            ("poll_ms", d.poll_ms, 10, 10_000),
            ("lease_ttl_ms", d.lease_ttl_ms, 300, 600_000),
            ("invalid_budget", d.invalid_budget, 1, 10_000),
        ] {
            if !(min..=max).contains(&v) {
                return Err(format!("delivery.{key}: {v} is outside {min}..={max}"));
            }
        }
        if d.lease_ttl_ms < 3 * d.timeout_ms {
            return Err(format!(
                "delivery.lease_ttl_ms: {} is below 3 x delivery.timeout_ms ({}): the lease must outlive the longest request (an SMTP one waits twice the timeout), or another replica sends the same message while this one still is",
                d.lease_ttl_ms,
                3 * d.timeout_ms
            ));
        }
        for (name, rate) in &d.rates {
            if !self.destinations.contains_key(name) {
                return Err(format!("delivery.rates.{name}: no such destination"));
            }
            if !(*rate > 0.0 && *rate <= 10_000.0) {
                return Err(format!("delivery.rates.{name}: {rate} is outside (0, 10000]"));
            }
        }
        for (name, d) in &self.destinations {
            d.check().map_err(|e| format!("destinations.{name}.{e}"))?;
        }
        for (name, r) in &self.routes {
            let at = |e: String| format!("routes.{name}.{e}");
            Matcher::new(r.clone()).map_err(at)?;
            crate::escalate::Rule::of(r).map_err(at)?;
            if r.destinations.is_empty() {
                return Err(at("destinations: name at least one".into()));
            }
            for d in &r.destinations {
                if !self.destinations.contains_key(d) {
                    return Err(at(format!("destinations: {d:?} is not under destinations.")));
                }
            }
            if let Some(t) = &r.template {
                Template::parse(t).map_err(|e| at(format!("template: {e}")))?;
            }
            if r.digest_window_ms != 0 && !(100..=3_600_000).contains(&r.digest_window_ms) {
                return Err(at(
                    "digest_window_ms: 0 (each event alone), or 100 to 3600000 (an hour)".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> SinksConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_good_configuration_and_what_each_mistake_says() {
        std::env::set_var("SINKS_TEST_SLACK_URL", "http://127.0.0.1:9/services/T/B/x");
        let good = serde_json::json!({
            "delivery": {"max_attempts": 8},
            "destinations": {
                "ops-slack": {"kind": "slack", "url": "env:SINKS_TEST_SLACK_URL"},
                "hook": {"kind": "webhook", "url": "https://hooks.example.com/x", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]},
                "line": {"kind": "line", "token": "t", "to": "U1"}
            },
            "routes": {
                "stockouts": {"channels": ["inventory"], "when": ["payload.data.isAvailable == false"], "destinations": ["ops-slack", "line"]},
                "prices": {"types": ["PRICE_CHANGE"], "destinations": ["hook"], "digest_window_ms": 0}
            }
        });
        config(good.clone()).validate().unwrap();
        let cases = [
            (
                "/routes/stockouts/destinations/0",
                serde_json::json!("nope"),
                "routes.stockouts.destinations: \"nope\"",
            ),
            (
                "/routes/stockouts/when/0",
                serde_json::json!("isAvailable"),
                "routes.stockouts.when[0]:",
            ),
            (
                "/routes/prices/digest_window_ms",
                serde_json::json!(4_000_000),
                "routes.prices.digest_window_ms: 0 (each event alone), or 100",
            ),
            (
                "/destinations/hook/url",
                serde_json::json!("http://example.com/x"),
                "destinations.hook.url: https://",
            ),
            // Plain HTTP only to a loopback host, by its parsed address.
            (
                "/destinations/hook/url",
                serde_json::json!("http://127.0.0.1@evil.example/x"),
                "destinations.hook.url: https://",
            ),
            (
                "/destinations/hook/url",
                serde_json::json!("http://127.evil.example/x"),
                "destinations.hook.url: https://",
            ),
            (
                "/delivery",
                serde_json::json!({"lease_ttl_ms": 5000, "timeout_ms": 10000}),
                "delivery.lease_ttl_ms: 5000 is below 3 x delivery.timeout_ms (30000)",
            ),
            (
                "/destinations/hook/secrets/0",
                serde_json::json!("whsec_%%"),
                "destinations.hook.secrets[0]: a webhook secret",
            ),
            (
                "/destinations/ops-slack/url",
                serde_json::json!("env:SINKS_TEST_UNSET"),
                "destinations.ops-slack.url: the variable SINKS_TEST_UNSET is not set",
            ),
        ];
        for (pointer, value, says) in cases {
            let mut bad = good.clone();
            *bad.pointer_mut(pointer).unwrap() = value;
            let e = config(bad).validate().unwrap_err();
            assert!(e.starts_with(says), "{pointer}: {e}");
        }
        // A local stand-in is still fine, and an email relay without TLS must be loopback.
        let mut local = good.clone();
        *local.pointer_mut("/destinations/hook/url").unwrap() = serde_json::json!("http://[::1]:9/x");
        config(local).validate().unwrap();
        for (host, ok) in [("127.0.0.1", true), ("localhost", true), ("127.evil.example", false)] {
            let mut mail = good.clone();
            mail["destinations"]["mail"] = serde_json::json!({
                "kind": "email", "host": host, "port": 25, "tls": "none",
                "from": "ops@example.com", "to": ["a@example.com"]
            });
            let r = config(mail).validate();
            assert_eq!(r.is_ok(), ok, "{host}: {r:?}");
        }
        let unknown: Result<SinksConfig, _> =
            serde_json::from_value(serde_json::json!({"destinations": {"x": {"kind": "pager"}}}));
        assert!(unknown.is_err());
    }

    #[test]
    fn secrets_never_print() {
        let c = config(
            serde_json::json!({"destinations": {"s": {"kind": "slack", "url": "https://hooks.slack.com/services/T/B/very-secret"}}}),
        );
        let printed = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
        let e = config(
            serde_json::json!({"destinations": {"s": {"kind": "slack", "url": "http://example.com/very-secret"}}}),
        )
        .validate()
        .unwrap_err();
        assert!(!e.contains("very-secret"), "{e}");
    }
}
