//! Channels and the Redis names derived from them (CONTRACT §2).

use std::borrow::Cow;

use crate::{envelope::EventType, error::InvalidName};

/// A channel name such as `orders`.
///
/// A valid name is 1 to 64 characters of `A-Z a-z 0-9 _ . : @ -`: no `{` `}` (they would break
/// the Redis Cluster hash tag), no glob characters, no spaces.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(Cow<'static, str>);

impl Channel {
    /// Stock and availability (`INVENTORY_CHANGE`).
    pub const INVENTORY: Channel = Channel(Cow::Borrowed("inventory"));
    /// Marketplace orders (`ORDER_RECEIVED`).
    pub const ORDERS: Channel = Channel(Cow::Borrowed("orders"));
    /// Prices (`PRICE_CHANGE`).
    pub const PRICING: Channel = Channel(Cow::Borrowed("pricing"));
    /// Listing states (`LISTING_UPDATE`).
    pub const LISTINGS: Channel = Channel(Cow::Borrowed("listings"));

    /// Validates and wraps a channel name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        check_name("channel", &name, b"_.:@-")?;
        Ok(Channel(Cow::Owned(name)))
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The built-in channels with their one event type each, as in the Phase 27 design.
pub fn builtin_channels() -> Vec<(Channel, EventType)> {
    vec![
        (Channel::INVENTORY, EventType::INVENTORY_CHANGE),
        (Channel::ORDERS, EventType::ORDER_RECEIVED),
        (Channel::PRICING, EventType::PRICE_CHANGE),
        (Channel::LISTINGS, EventType::LISTING_UPDATE),
    ]
}

pub(crate) fn check_name(what: &'static str, name: &str, extra: &[u8]) -> Result<(), InvalidName> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b)) {
        Some("it has a character outside A-Z a-z 0-9 and the allowed punctuation")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(InvalidName {
            what,
            name: name.chars().take(80).collect(),
            reason,
        }),
    }
}

/// Display, FromStr, Serialize and Deserialize for a validated name type with a
/// `new(String) -> Result<Self, InvalidName>` constructor and an `as_str`.
macro_rules! validated_name {
    ($t:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::error::InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::new(s)
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $t::new(<String as serde::Deserialize>::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use validated_name;

validated_name!(Channel);

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

    /// `rakuda:realtime:stream:{<channel>}`: the channel's capped stream.
    pub fn stream(&self, channel: &Channel) -> String {
        format!("{}stream:{{{}}}", self.prefix, channel)
    }

    /// `rakuda:realtime:<channel>`: the pub/sub channel the Phase 27 Node EventBus uses.
    pub fn pubsub(&self, channel: &Channel) -> String {
        format!("{}{}", self.prefix, channel)
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
