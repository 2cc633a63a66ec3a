//! `notifications.*` settings, the event types on the private channel, and the limits.

use event_bus::{Channel, ChannelSpec, EventType};
use serde::{Deserialize, Serialize};

/// A new notification for a user.
pub const NOTIFICATION: &str = "NOTIFICATION";
/// Notifications were marked read on some device.
pub const NOTIFICATION_READ: &str = "NOTIFICATION_READ";
/// The first message of a stream that does not resume the private channel.
pub const NOTIFICATION_UNREAD: &str = "NOTIFICATION_UNREAD";

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest message, in characters.
pub const MAX_MESSAGE: usize = 4000;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;
/// A retried create with the same idempotency key returns the first one for this long.
pub const IDEMPOTENCY_SECS: u64 = 24 * 3600;

/// `notifications.*` settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Per-user notifications on (`RAKUDA__NOTIFICATIONS__ENABLED`).
    pub enabled: bool,
    /// The private channel: a bus channel that only ever reaches each event's own user.
    pub channel: Channel,
    /// Notifications kept per user; past it the oldest go.
    pub max_per_user: usize,
    /// A user's notifications expire this many days after the last one was created.
    pub retention_days: u64,
    /// Unread notifications sent first on a stream that does not resume (the newest).
    pub snapshot_limit: usize,
    /// Web Push subscriptions (`notifications.push.*`).
    pub push: PushConfig,
}

/// `notifications.push.*`: browsers that subscribe to Web Push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// The VAPID public key (base64url, 65 bytes) browsers subscribe with; empty: Web Push off.
    /// The sinks hold its private key.
    pub public_key: String,
    /// Push services an endpoint may be at: hosts, `*.` for subdomains, `http://127.x.y.z:port`
    /// for a local stand-in.
    pub allowed_hosts: Vec<String>,
    /// Subscriptions kept per user (browsers, devices); past it the oldest go.
    pub max_per_user: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            public_key: String::new(),
            allowed_hosts: crate::push::DEFAULT_PUSH_HOSTS.iter().map(|h| h.to_string()).collect(),
            max_per_user: 10,
        }
    }
}

impl PushConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.public_key.is_empty() {
            crate::push::public_key_bytes(&self.public_key)
                .map_err(|e| format!("notifications.push.public_key: {e}"))?;
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if !crate::push::allowed_entry(h) {
                return Err(format!(
                    "notifications.push.allowed_hosts[{i}]: {h:?} is not a host, *.<domain> or http://127.x.y.z:<port>"
                ));
            }
        }
        if !(1..=100).contains(&self.max_per_user) {
            return Err(format!(
                "notifications.push.max_per_user: {} is outside 1..=100",
                self.max_per_user
            ));
        }
        Ok(())
    }
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            enabled: true,
            channel: Channel::new("notifications").expect("valid"),
            max_per_user: 1000,
            retention_days: 30,
            snapshot_limit: 100,
            push: PushConfig::default(),
        }
    }
}

impl NotificationsConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let within = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("notifications.{key}: {v} is outside {lo}..={hi}"))
            }
        };
        within("max_per_user", self.max_per_user as u64, 1, 100_000)?;
        within("retention_days", self.retention_days, 1, 3650)?;
        within("snapshot_limit", self.snapshot_limit as u64, 1, 1000)?;
        if self.channel.is_partition() || self.channel.user_partition("u").is_err() {
            return Err(format!(
                "notifications.channel: {:?} must be a channel name of at most 46 characters without `#` \
                 (each user's partition adds `#u` and 16 hex digits)",
                self.channel.as_str()
            ));
        }
        self.push.validate()
    }

    /// The bus channel spec of the private channel.
    pub fn channel_spec(&self) -> ChannelSpec {
        ChannelSpec::new(
            self.channel.clone(),
            vec![
                EventType::new(NOTIFICATION).expect("valid"),
                EventType::new(NOTIFICATION_READ).expect("valid"),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        NotificationsConfig::default().validate().unwrap();
        let c = NotificationsConfig {
            snapshot_limit: 0,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err(),
            "notifications.snapshot_limit: 0 is outside 1..=1000"
        );
        let c = NotificationsConfig {
            retention_days: 4000,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("notifications.retention_days"));
        let c = NotificationsConfig {
            channel: Channel::new("x".repeat(47)).unwrap(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("notifications.channel: "));
        let mut c = NotificationsConfig::default();
        c.push.public_key = "AAAA".into();
        assert!(c.validate().unwrap_err().starts_with("notifications.push.public_key: "));
        let mut c = NotificationsConfig::default();
        c.push.allowed_hosts.push("https://evil.example/x".into());
        assert!(c
            .validate()
            .unwrap_err()
            .starts_with("notifications.push.allowed_hosts[5]"));
    }
}
