//! Names: [`Channel`] and [`EventType`], validated the same way, and why a name is refused.
//! Everything else about channels and events builds on these.

use std::borrow::Cow;

/// A channel or event type name that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name {name:?}: {reason}")]
pub struct InvalidName {
    /// `channel` or `event type`.
    pub what: &'static str,
    /// The rejected name (cut to 80 characters).
    pub name: String,
    /// Why it was rejected.
    pub reason: &'static str,
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
            type Err = $crate::name::InvalidName;
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

validated_name!(Channel);

/// An event type such as `ORDER_RECEIVED` or `task_created`.
///
/// The four built-in types are constants; other types come from configuration. A valid type
/// is 1 to 64 characters of `A-Z a-z 0-9 _ . : -`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(Cow<'static, str>);

impl EventType {
    /// Stock went out, came back, or its price moved (channel `inventory`).
    pub const INVENTORY_CHANGE: EventType = EventType(Cow::Borrowed("INVENTORY_CHANGE"));
    /// A marketplace order arrived (channel `orders`).
    pub const ORDER_RECEIVED: EventType = EventType(Cow::Borrowed("ORDER_RECEIVED"));
    /// A listing's price changed (channel `pricing`).
    pub const PRICE_CHANGE: EventType = EventType(Cow::Borrowed("PRICE_CHANGE"));
    /// A listing changed state (channel `listings`).
    pub const LISTING_UPDATE: EventType = EventType(Cow::Borrowed("LISTING_UPDATE"));

    /// Validates and wraps a type name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        check_name("event type", &name, b"_.:-")?;
        Ok(EventType(Cow::Owned(name)))
    }

    /// The type name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_name!(EventType);
