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
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            enabled: true,
            channel: Channel::new("notifications").expect("valid"),
            max_per_user: 1000,
            retention_days: 30,
            snapshot_limit: 100,
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
        within("snapshot_limit", self.snapshot_limit as u64, 1, 1000)
    }

    /// The bus channel spec of the private channel.
    pub fn channel_spec(&self) -> ChannelSpec {
        ChannelSpec {
            name: self.channel.clone(),
            types: vec![
                EventType::new(NOTIFICATION).expect("valid"),
                EventType::new(NOTIFICATION_READ).expect("valid"),
            ],
        }
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
    }
}
