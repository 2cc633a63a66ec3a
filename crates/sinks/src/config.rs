//! The sinks' configuration: routes (which events, to which destinations, in what words) and
//! destinations (where, with which credentials), checked before anything runs; every error
//! names the key. Destinations come from here only: no URL is ever taken from an event or a
//! request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::secret::Secret;
use crate::{
    destination::{discord::Discord, inbox::Inbox, line::Line, slack::Slack, webhook::Webhook, Kind},
    route::{Matcher, Route},
    template::Template,
};

/// A destination as configured (`destinations.<name>`), by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationConfig {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL (a secret).
        url: Secret,
    },
    /// A Discord webhook.
    Discord {
        /// The webhook URL (a secret).
        url: Secret,
    },
    /// LINE Messaging API push.
    Line {
        /// The channel access token.
        token: Secret,
        /// The user, group or room to push to.
        to: String,
        /// The push endpoint (default LINE's).
        #[serde(default = "line_url")]
        url: String,
    },
    /// A user's notifications on a gateway (its bell).
    Inbox {
        /// The gateway's base URL.
        url: String,
        /// A service key of that gateway.
        service_key: Secret,
        /// Whose bell.
        user_id: String,
        /// `info`, `warning` (default), `error` or `success`.
        #[serde(default = "warning")]
        level: String,
    },
    /// A webhook signed per Standard Webhooks.
    Webhook {
        /// The endpoint.
        url: String,
        /// Signing secrets (`whsec_...`), the current one first.
        secrets: Vec<Secret>,
    },
}

fn warning() -> String {
    "warning".to_owned()
}

fn line_url() -> String {
    crate::destination::line::PUSH_URL.to_owned()
}

impl DestinationConfig {
    /// The kind that builds its requests.
    pub fn kind(&self) -> Box<dyn Kind> {
        match self.clone() {
            DestinationConfig::Slack { url } => Box::new(Slack { url }),
            DestinationConfig::Discord { url } => Box::new(Discord { url }),
            DestinationConfig::Line { token, to, url } => Box::new(Line { token, to, url }),
            DestinationConfig::Webhook { url, secrets } => Box::new(Webhook { url, secrets }),
            DestinationConfig::Inbox {
                url,
                service_key,
                user_id,
                level,
            } => Box::new(Inbox {
                url,
                service_key,
                user_id,
                level,
            }),
        }
    }

    /// Checks the destination; the error is relative to its key.
    fn check(&self) -> Result<(), String> {
        let secret = |key: &str, s: &Secret| s.value().map(drop).map_err(|e| format!("{key}: {e}"));
        match self {
            DestinationConfig::Slack { url } | DestinationConfig::Discord { url } => {
                secret("url", url)?;
                check_url("url", &url.value()?)
            }
            DestinationConfig::Line { token, to, url } => {
                secret("token", token)?;
                if to.is_empty() {
                    return Err("to: the user, group or room id to push to".into());
                }
                check_url("url", url)
            }
            DestinationConfig::Inbox {
                url,
                service_key,
                user_id,
                level,
            } => {
                secret("service_key", service_key)?;
                if user_id.is_empty() {
                    return Err("user_id: whose notifications".into());
                }
                if !["info", "warning", "error", "success"].contains(&level.as_str()) {
                    return Err(format!("level: {level:?} is not info, warning, error or success"));
                }
                // The gateway is this deployment's own: plain HTTP inside the cluster is fine.
                match url.split_once("://") {
                    Some(("http" | "https", rest)) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
                    _ => Err("url: the gateway's base URL, http(s)://<host>[:port]".into()),
                }
            }
            DestinationConfig::Webhook { url, secrets } => {
                if secrets.is_empty() {
                    return Err("secrets: at least one whsec_ secret".into());
                }
                for (i, s) in secrets.iter().enumerate() {
                    let key = format!("secrets[{i}]");
                    secret(&key, s)?;
                    crate::destination::webhook::key_of(&s.value()?).map_err(|e| format!("{key}: {e}"))?;
                }
                check_url("url", url)
            }
        }
    }
}

/// HTTPS anywhere, or plain HTTP to a loopback address (a local receiver, a test's stand-in).
fn check_url(key: &str, url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| {
        url.strip_prefix("http://").filter(|r| {
            let host = r.split(['/', '?']).next().unwrap_or("");
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            host == "localhost" || host == "[::1]" || host.starts_with("127.")
        })
    });
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => Err(format!(
            "{key}: https://<host>/..., or http:// to a loopback address (the URL is not shown)"
        )),
    }
}

/// How deliveries are tried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Attempts of one delivery before it is a dead letter.
    pub max_attempts: u32,
    /// A delivery queued longer ago than this, in seconds, is a dead letter.
    pub max_age_secs: u64,
    /// Each request's deadline (connect, send, answer), in ms.
    pub timeout_ms: u64,
    /// The first retry's delay, in ms; doubled per attempt, with 20% jitter.
    pub backoff_initial_ms: u64,
    /// The longest retry delay, in ms.
    pub backoff_max_ms: u64,
    /// How often an idle destination looks for new deliveries, and a channel for new events, in ms.
    pub poll_ms: u64,
    /// Leases (one replica reads a channel, one delivers to a destination), in ms.
    pub lease_ttl_ms: u64,
    /// Requests per second per destination (all replicas together), by destination name;
    /// default per kind: slack 1, discord 2, line 50, webhook 20.
    pub rates: BTreeMap<String, f64>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 8,
            max_age_secs: 86_400,
            timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            poll_ms: 100,
            lease_ttl_ms: 5_000,
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

impl DestinationConfig {
    /// Requests per second when `delivery.rates` names none.
    pub fn default_rate(&self) -> f64 {
        match self {
            DestinationConfig::Slack { .. } => 1.0,
            DestinationConfig::Discord { .. } => 2.0,
            DestinationConfig::Line { .. } => 50.0,
            DestinationConfig::Webhook { .. } => 20.0,
            DestinationConfig::Inbox { .. } => 50.0,
        }
    }
}

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
            ("timeout_ms", d.timeout_ms, 100, 120_000),
            ("backoff_initial_ms", d.backoff_initial_ms, 10, 3_600_000),
            ("backoff_max_ms", d.backoff_max_ms, d.backoff_initial_ms, 86_400_000),
            ("poll_ms", d.poll_ms, 10, 10_000),
            ("lease_ttl_ms", d.lease_ttl_ms, 500, 600_000),
        ] {
            if !(min..=max).contains(&v) {
                return Err(format!("delivery.{key}: {v} is outside {min}..={max}"));
            }
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
