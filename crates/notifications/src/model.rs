//! What a notification is, what the store answers, and whose an event of the private channel is.

use event_bus::{Channel, Envelope, Timestamp};
use serde::{Deserialize, Serialize};

/// A stream's view of the private channel: events of `channel`, the user's partition of it,
/// reach it only when their `payload.data.user_id` is `user` (users may rarely share a
/// partition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Private {
    /// The user's partition of the private channel (`<channel>#u<hash>`).
    pub channel: Channel,
    /// The stream's user (the token's `sub`).
    pub user: String,
}

/// The user an event of the private channel is for.
pub fn owner(env: &Envelope) -> Option<&str> {
    env.payload.data.as_ref()?.get("user_id")?.as_str()
}

/// Whether `user` can have notifications: 1 to 128 characters of `A-Z a-z 0-9 _ . : @ | + -`
/// (no `{` `}`, which would break the keys' hash tag).
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 128 {
        return Err(format!("user id {user:?}: 1 to 128 characters"));
    }
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:@|+-".contains(&b))
    {
        return Err(format!(
            "user id {:?}: only A-Z a-z 0-9 and _ . : @ | + - are allowed",
            user.chars().take(140).collect::<String>()
        ));
    }
    Ok(())
}

/// How bad a notification is (`type` in JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something to know.
    #[default]
    Info,
    /// Something to look at.
    Warning,
    /// Something failed.
    Error,
    /// Something worked.
    Success,
}

/// A notification as stored: what never changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Its id (a UUID).
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// `info` | `warning` | `error` | `success`.
    #[serde(rename = "type")]
    pub level: Level,
    /// Short title.
    pub title: String,
    /// The text.
    pub message: String,
    /// When it was created (RFC 3339, UTC, ms).
    pub created_at: Timestamp,
}

/// A notification with its read state, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// What never changes.
    #[serde(flatten)]
    pub stored: Stored,
    /// Marked read on some device.
    pub read: bool,
}

/// What a create did.
#[derive(Debug)]
pub struct Created {
    /// The notification (the first one, for a retried idempotency key).
    pub notification: Notification,
    /// The user's unread count after it.
    pub unread: u64,
    /// False when the idempotency key had been used: nothing new was stored.
    pub new: bool,
}

/// One page of a user's notifications.
#[derive(Debug)]
pub struct Page {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// The user's unread count.
    pub unread: u64,
    /// How many the user has.
    pub total: u64,
}

impl Page {
    /// A user with no notifications.
    pub fn empty() -> Page {
        Page {
            notifications: Vec::new(),
            unread: 0,
            total: 0,
        }
    }
}

/// Which page of a user's notifications: at most `limit`, older than `before` (one of the
/// user's ids) if given, only unread ones if `unread_only`.
#[derive(Clone, Copy, Debug)]
pub struct PageQuery<'a> {
    /// Only unread ones.
    pub unread_only: bool,
    /// At most this many.
    pub limit: usize,
    /// Older than this notification.
    pub before: Option<&'a str>,
}

/// What marking read did.
#[derive(Debug, PartialEq, Eq)]
pub enum Marked {
    /// The user has no notification with that id.
    NotFound,
    /// `changed` notifications went from unread to read; `unread` are left.
    Done {
        /// How many changed.
        changed: u64,
        /// Unread left.
        unread: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_that_would_break_keys_are_refused() {
        for bad in ["", "a{b}", "a b", "a\nb", &"x".repeat(129)] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "auth0|5f1", "a.b@example.com", "user:42"] {
            check_user(good).unwrap();
        }
    }
}
