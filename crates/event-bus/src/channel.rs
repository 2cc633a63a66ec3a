//! The built-in channels and the Redis names derived from a channel (`docs/reference.md`,
//! "Redis keys").

use crate::name::{Channel, EventType};

/// The built-in channels with their one event type each, as in the Phase 27 design.
pub fn builtin_channels() -> Vec<(Channel, EventType)> {
    vec![
        (Channel::INVENTORY, EventType::INVENTORY_CHANGE),
        (Channel::ORDERS, EventType::ORDER_RECEIVED),
        (Channel::PRICING, EventType::PRICE_CHANGE),
        (Channel::LISTINGS, EventType::LISTING_UPDATE),
    ]
}

/// The Redis names under one prefix (default `rakuda:realtime:`).
///
/// Every key that one script touches carries the channel as its hash tag (`{orders}`), so the
/// bus works unchanged on Redis Cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys { prefix: prefix.into() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix and `parts`, joined without the formatting machinery: the names a publish
    /// uses are made on every script call.
    fn join(&self, parts: &[&str]) -> String {
        let mut name = String::with_capacity(self.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        name.push_str(&self.prefix);
        for p in parts {
            name.push_str(p);
        }
        name
    }

    /// `rakuda:realtime:stream:{<channel>}`: the channel's capped stream.
    pub fn stream(&self, channel: &Channel) -> String {
        self.join(&["stream:{", channel.as_str(), "}"])
    }

    /// `rakuda:realtime:live:{<channel>}`: the shard channel (`SPUBLISH`/`SSUBSCRIBE`) that
    /// announces the channel's events; in the stream's hash slot, so on a Cluster only the
    /// master that stores an event announces it, and only to its own subscribers.
    pub fn live(&self, channel: &Channel) -> String {
        self.join(&["live:{", channel.as_str(), "}"])
    }

    /// `rakuda:realtime:<channel>`: the pub/sub channel the Phase 27 Node EventBus uses.
    pub fn pubsub(&self, channel: &Channel) -> String {
        self.join(&[channel.as_str()])
    }

    /// `rakuda:realtime:*`: the pattern that matches every channel's pub/sub name.
    pub fn pubsub_pattern(&self) -> String {
        format!("{}*", self.prefix)
    }

    /// `rakuda:realtime:dedupe:{<channel>}:<key>`: an idempotency key.
    pub fn dedupe(&self, channel: &Channel, key: &str) -> String {
        format!("{}dedupe:{{{}}}:{}", self.prefix, channel, key)
    }

    /// `rakuda:realtime:state:{<channel>}:<entity>`: an entity's state for guarded publishes.
    pub fn state(&self, channel: &Channel, entity: &str) -> String {
        format!("{}state:{{{}}}:{}", self.prefix, channel, entity)
    }

    /// The channel a pub/sub name belongs to, if it is one of ours.
    pub fn channel_of_pubsub(&self, name: &str) -> Option<Channel> {
        name.strip_prefix(&self.prefix).and_then(|c| Channel::new(c).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase27_names() {
        let k = Keys::new("rakuda:realtime:");
        assert_eq!(k.pubsub(&Channel::INVENTORY), "rakuda:realtime:inventory");
        assert_eq!(k.pubsub(&Channel::ORDERS), "rakuda:realtime:orders");
        assert_eq!(k.pubsub(&Channel::PRICING), "rakuda:realtime:pricing");
        assert_eq!(k.pubsub(&Channel::LISTINGS), "rakuda:realtime:listings");
        assert_eq!(k.pubsub_pattern(), "rakuda:realtime:*");
        assert_eq!(k.stream(&Channel::ORDERS), "rakuda:realtime:stream:{orders}");
        assert_eq!(k.live(&Channel::ORDERS), "rakuda:realtime:live:{orders}");
        assert_eq!(
            k.dedupe(&Channel::ORDERS, "job:1"),
            "rakuda:realtime:dedupe:{orders}:job:1"
        );
        assert_eq!(k.channel_of_pubsub("rakuda:realtime:orders"), Some(Channel::ORDERS));
        assert_eq!(k.channel_of_pubsub("other:orders"), None);
    }

    #[test]
    fn channel_names_are_checked() {
        for ok in ["orders", "task-board.sessions", "user:42", "a@b"] {
            assert!(Channel::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a{b}", "a b", "a*", "ü", &"x".repeat(65)] {
            let err = Channel::new(bad).unwrap_err();
            assert!(err.to_string().contains("channel"), "{err}");
        }
    }
}
