//! The sinks' configuration: routes (which events, to which destinations, in what words) and
//! destinations (where, with which credentials), checked before anything runs; every error
//! names the key. Destinations come from here only: no URL is ever taken from an event or a
//! request.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    destination::{discord::Discord, line::Line, slack::Slack, webhook::Webhook, Kind},
    route::{Matcher, Route},
    template::Template,
};

/// A credential: `env:NAME` (read from the environment), `file:/path` (read from a file, again
/// at each use, so a rotated key is picked up), or the value itself. Never printed: `Debug`,
/// `Display` and serialising all say `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret given as its value (tests, and values set straight in the environment).
    pub fn literal(value: &str) -> Secret {
        Secret(value.to_owned())
    }

    /// The value now; the error says which variable or file is missing, never the value.
    pub fn value(&self) -> Result<String, String> {
        if let Some(name) = self.0.strip_prefix("env:") {
            std::env::var(name).map_err(|_| format!("the variable {name} is not set"))
        } else if let Some(path) = self.0.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("the file {path} cannot be read: {e}"))
        } else {
            Ok(self.0.clone())
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

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
    /// A webhook signed per Standard Webhooks.
    Webhook {
        /// The endpoint.
        url: String,
        /// Signing secrets (`whsec_...`), the current one first.
        secrets: Vec<Secret>,
    },
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

/// The sinks' configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// Which events go where.
    pub routes: BTreeMap<String, Route>,
    /// Where they go.
    pub destinations: BTreeMap<String, DestinationConfig>,
}

impl SinksConfig {
    /// Checks everything serde cannot: that every route's destinations exist, its conditions
    /// and template parse, its window is at most an hour, every secret can be read and every URL
    /// is one the sinks may call. The error names the key.
    pub fn validate(&self) -> Result<(), String> {
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
            if r.digest_window_ms > 3_600_000 {
                return Err(at("digest_window_ms: at most 3600000 (an hour)".into()));
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
                "prices": {"types": ["PRICE_CHANGE"], "destinations": ["hook"], "digest_window_ms": 60000}
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
                "routes.prices.digest_window_ms",
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
