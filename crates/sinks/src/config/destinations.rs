//! `destinations.<name>`: each kind's settings, the kind they build, and their checks.

use serde::{Deserialize, Serialize};

use crate::{
    destination::{
        discord::Discord,
        email::{mailbox, Email, Relay, SmtpTls},
        inbox::Inbox,
        line::Line,
        slack::Slack,
        web_push::WebPush,
        webhook::Webhook,
        Kind,
    },
    secret::Secret,
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
    /// Email through an SMTP relay.
    Email {
        /// The relay's host.
        host: String,
        /// Its port (587).
        #[serde(default = "smtp_port")]
        port: u16,
        /// `starttls` (default), `tls`, or `none` (a loopback relay only).
        #[serde(default)]
        tls: SmtpTls,
        /// The account on the relay, if it wants one.
        #[serde(default)]
        username: Option<String>,
        /// Its password (a secret).
        #[serde(default)]
        password: Option<Secret>,
        /// The sender (`Rakuda <alerts@example.com>`).
        from: String,
        /// The recipients.
        to: Vec<String>,
        /// Put before each subject (`[rakuda] `).
        #[serde(default = "subject_prefix")]
        subject_prefix: String,
    },
    /// Web Push to the browsers of some users (their subscriptions on the gateway).
    WebPush {
        /// Whose subscriptions.
        users: Vec<String>,
        /// The VAPID private key, base64url (a secret; `sinks vapid-keys` makes a pair).
        vapid_private_key: Secret,
        /// Who runs this sender: `mailto:...` or `https://...`.
        contact: String,
        /// How long a push service keeps an undelivered message, in seconds (86400).
        #[serde(default = "push_ttl")]
        ttl_secs: u64,
        /// `very-low`, `low`, `normal` (default) or `high`.
        #[serde(default = "normal")]
        urgency: String,
        /// Push services an endpoint may be at (the gateway's `notifications.push.allowed_hosts`).
        #[serde(default = "push_hosts")]
        allowed_hosts: Vec<String>,
    },
    /// A webhook signed per Standard Webhooks.
    Webhook {
        /// The endpoint.
        url: String,
        /// Signing secrets (`whsec_...`), the current one first.
        secrets: Vec<Secret>,
    },
}

fn push_ttl() -> u64 {
    86_400
}

fn normal() -> String {
    "normal".to_owned()
}

fn push_hosts() -> Vec<String> {
    notifications::push::DEFAULT_PUSH_HOSTS
        .iter()
        .map(|h| h.to_string())
        .collect()
}

fn smtp_port() -> u16 {
    587
}

fn subject_prefix() -> String {
    "[rakuda] ".to_owned()
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
            DestinationConfig::WebPush {
                users,
                vapid_private_key,
                contact,
                ttl_secs,
                urgency,
                allowed_hosts,
            } => Box::new(WebPush {
                users,
                vapid_private_key,
                contact,
                ttl_secs,
                urgency,
                allowed_hosts,
            }),
            DestinationConfig::Email {
                host,
                port,
                tls,
                username,
                password,
                from,
                to,
                subject_prefix,
            } => Box::new(Email {
                relay: Relay {
                    host,
                    port,
                    tls,
                    username,
                    password,
                },
                // Checked at start-up (`check`).
                from: mailbox(&from).unwrap_or_else(|_| "invalid@invalid".parse().expect("an address")),
                to: to.iter().filter_map(|t| mailbox(t).ok()).collect(),
                subject_prefix,
            }),
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
    pub(super) fn check(&self) -> Result<(), String> {
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
            DestinationConfig::Email {
                host,
                port,
                tls,
                username,
                password,
                from,
                to,
                ..
            } => {
                let loopback = notifications::push::is_loopback_host(host);
                if host.is_empty() || host.contains(['/', ' ']) {
                    return Err(format!("host: {host:?} is not a host name"));
                }
                if *port == 0 {
                    return Err("port: 1..=65535".into());
                }
                if *tls == SmtpTls::None && !loopback {
                    return Err("tls: none only to a loopback relay (starttls or tls otherwise)".into());
                }
                match (username, password) {
                    (Some(_), Some(p)) => secret("password", p)?,
                    (None, None) => {}
                    _ => return Err("username: a username and a password, or neither".into()),
                }
                mailbox(from).map_err(|e| format!("from: {e}"))?;
                if to.is_empty() {
                    return Err("to: at least one recipient".into());
                }
                for (i, t) in to.iter().enumerate() {
                    mailbox(t).map_err(|e| format!("to[{i}]: {e}"))?;
                }
                Ok(())
            }
            DestinationConfig::WebPush {
                users,
                vapid_private_key,
                contact,
                ttl_secs,
                urgency,
                allowed_hosts,
            } => {
                if users.is_empty() {
                    return Err("users: whose subscriptions (at least one user)".into());
                }
                for (i, u) in users.iter().enumerate() {
                    notifications::check_user(u).map_err(|e| format!("users[{i}]: {e}"))?;
                }
                secret("vapid_private_key", vapid_private_key)?;
                crate::destination::web_push::key_pair(&vapid_private_key.value()?)
                    .map_err(|e| format!("vapid_private_key: {e}"))?;
                if !(contact.starts_with("mailto:") || contact.starts_with("https://")) || contact.len() < 10 {
                    return Err("contact: mailto:<address> or https://<page>, for the push services".into());
                }
                if !(0..=2_419_200).contains(ttl_secs) {
                    return Err(format!("ttl_secs: {ttl_secs} is outside 0..=2419200 (4 weeks)"));
                }
                if !["very-low", "low", "normal", "high"].contains(&urgency.as_str()) {
                    return Err(format!("urgency: {urgency:?} is not very-low, low, normal or high"));
                }
                for (i, h) in allowed_hosts.iter().enumerate() {
                    if !notifications::push::allowed_entry(h) {
                        return Err(format!(
                            "allowed_hosts[{i}]: {h:?} is not a host, *.<domain> or http://127.x.y.z:<port>"
                        ));
                    }
                }
                Ok(())
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

/// HTTPS anywhere, or plain HTTP to a loopback address (a local receiver, a test's stand-in):
/// the host is parsed, so `http://127.0.0.1@evil.example/` (whose host is `evil.example`) and
/// `http://127.evil.example/` are refused.
fn check_url(key: &str, url: &str) -> Result<(), String> {
    let authority = notifications::push::authority_of(url).unwrap_or("");
    let ok = if url.starts_with("https://") {
        !authority.is_empty()
    } else {
        url.starts_with("http://") && notifications::push::loopback_authority(authority)
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: https://<host>/..., or http:// to a loopback address (the URL is not shown)"
        ))
    }
}

impl DestinationConfig {
    /// Requests per second when `delivery.rates` names none.
    pub fn default_rate(&self) -> f64 {
        match self {
            DestinationConfig::Slack { .. } => 1.0,
            DestinationConfig::Discord { .. } => 2.0,
            DestinationConfig::Line { .. } => 50.0,
            DestinationConfig::Webhook { .. } => 20.0,
            DestinationConfig::Inbox { .. } => 50.0,
            DestinationConfig::Email { .. } => 1.0,
            DestinationConfig::WebPush { .. } => 50.0,
        }
    }
}
