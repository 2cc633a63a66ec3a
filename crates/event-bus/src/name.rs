//! Names: [`Channel`] and [`EventType`], validated the same way, and why a name is refused.
//! Everything else about channels and events builds on these.

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{OnceLock, RwLock},
};

/// Names interned at most: past this many, a new name is kept as its own copy (correct, just
/// slower to compare), so names an outside party sends cannot grow the table without bound.
const MAX_INTERNED: usize = 4096;

/// One copy of each name seen, for the life of the process: equal names share their bytes,
/// so clones do not allocate and comparisons of equal names are one pointer check (a
/// connection compares channel names several times per event it is sent).
fn intern(name: &str) -> Cow<'static, str> {
    static NAMES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(s) = names.read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return Cow::Borrowed(s);
    }
    let mut names = names.write().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = names.get(name) {
        return Cow::Borrowed(s);
    }
    if names.len() >= MAX_INTERNED {
        return Cow::Owned(name.to_owned());
    }
    let s: &'static str = Box::leak(name.into());
    names.insert(s);
    Cow::Borrowed(s)
}

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
/// `from_text(&str) -> Result<Self, InvalidName>` constructor and an `as_str`; and equality,
/// order and hash by the text, with a shortcut for shared (interned) bytes.
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
                $t::from_text(s)
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // A name seen before is not copied: the text is looked up where it lies.
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a name")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        $t::from_text(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }

        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                let (a, b) = (self.as_str(), other.as_str());
                std::ptr::eq(a, b) || a == b
            }
        }

        impl Eq for $t {}

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                let (a, b) = (self.as_str(), other.as_str());
                if std::ptr::eq(a, b) {
                    std::cmp::Ordering::Equal
                } else {
                    a.cmp(b)
                }
            }
        }

        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.as_str().hash(h)
            }
        }
    };
}

/// A channel name such as `orders`, or one partition of a channel such as
/// `notifications#u3f9a0c1d2b4e5f60` (see [`Channel::partition`]).
///
/// A valid name is 1 to 64 characters of `A-Z a-z 0-9 _ . : @ -`: no `{` `}` (they would break
/// the Redis Cluster hash tag), no glob characters, no spaces. A partition's name is its
/// channel's, then `#` and the partition's key; a configured channel has no `#`.
#[derive(Clone, Debug)]
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
        Self::from_text(&name.into())
    }

    fn from_text(name: &str) -> Result<Self, InvalidName> {
        check_name("channel", name, b"_.:@-#")?;
        if name.starts_with('#') || name.ends_with('#') || name.matches('#').count() > 1 {
            return Err(InvalidName {
                what: "channel",
                name: name.chars().take(80).collect(),
                reason: "`#` only separates a channel from a partition key, once",
            });
        }
        // Partitions are many and come and go (one per user): not interned.
        if name.contains('#') {
            return Ok(Channel(Cow::Owned(name.to_owned())));
        }
        Ok(Channel(intern(name)))
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel this is a partition of, or this channel's own name: what clients see as an
    /// event's `channel`.
    pub fn logical(&self) -> &str {
        match self.0.split_once('#') {
            Some((channel, _)) => channel,
            None => &self.0,
        }
    }

    /// Whether this is a partition of a channel (its name has a `#`).
    pub fn is_partition(&self) -> bool {
        self.0.contains('#')
    }

    /// Partition `key` of this channel: its own stream and shard channel, in its own hash
    /// slot, carrying events whose `channel` is this one's. `key` is 1 to 24 characters of
    /// `A-Z a-z 0-9 _ . : @ -`.
    pub fn partition(&self, key: &str) -> Result<Channel, InvalidName> {
        Channel::from_text(&format!("{}#{key}", self.logical()))
    }

    /// The partition of this channel where `user`'s private events live:
    /// `<channel>#u<16 hex digits>`, the digits a hash of the user id (64-bit FNV-1a, the same
    /// in every process and version, so every gateway and publisher agrees). Different users
    /// may rarely share a partition: readers still check each event's user. The channel name
    /// must leave room for the 18 characters it adds (at most 46 characters).
    pub fn user_partition(&self, user: &str) -> Result<Channel, InvalidName> {
        self.partition(&format!("u{:016x}", fnv1a(user.as_bytes())))
    }
}

/// 64-bit FNV-1a: small, stable across builds (unlike std's hasher), good enough to spread ids.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

validated_name!(Channel);

/// An event type such as `ORDER_RECEIVED` or `task_created`.
///
/// The four built-in types are constants; other types come from configuration. A valid type
/// is 1 to 64 characters of `A-Z a-z 0-9 _ . : -`.
#[derive(Clone, Debug)]
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
    /// Someone acknowledged an event of the channel (`payload.id` the event's id): allowed on
    /// every channel, whatever its `types`.
    pub const ACK: EventType = EventType(Cow::Borrowed("ACK"));

    /// Validates and wraps a type name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        Self::from_text(&name.into())
    }

    fn from_text(name: &str) -> Result<Self, InvalidName> {
        check_name("event type", name, b"_.:-")?;
        Ok(EventType(intern(name)))
    }

    /// The type name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_name!(EventType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_their_bytes_and_compare_by_text() {
        let a = Channel::new("orders").unwrap();
        let b: Channel = serde_json::from_str("\"orders\"").unwrap();
        assert!(std::ptr::eq(a.as_str(), b.as_str()), "interned once");
        assert_eq!(a, Channel::ORDERS);
        assert_eq!(a.cmp(&Channel::PRICING), "orders".cmp("pricing"));
        // An escaped name is read whole, then looked up the same way.
        let c: Channel = serde_json::from_str("\"ord\\u0065rs\"").unwrap();
        assert!(std::ptr::eq(a.as_str(), c.as_str()));
        // Past the table's bound, a name is its own copy and still equal by its text.
        let own = Channel(Cow::Owned("orders".into()));
        assert_eq!(own, a);
        assert_eq!(own.cmp(&a), std::cmp::Ordering::Equal);
        let bad: Result<EventType, _> = serde_json::from_str("\"no spaces\"");
        assert!(bad.unwrap_err().to_string().contains("invalid event type name"));
    }

    #[test]
    fn a_partition_is_a_channel_with_a_key_and_shows_its_channel() {
        let n = Channel::new("notifications").unwrap();
        let p = n.user_partition("alice").unwrap();
        assert_eq!(
            p,
            n.user_partition("alice").unwrap(),
            "the same user, the same partition"
        );
        assert_ne!(p, n.user_partition("bob").unwrap());
        // Stable across builds and processes: every gateway computes the same name.
        assert_eq!(p.as_str(), format!("notifications#u{:016x}", fnv1a(b"alice")));
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "the published FNV-1a test vector");
        assert!(p.is_partition() && !n.is_partition());
        assert_eq!(p.logical(), "notifications");
        assert_eq!(n.logical(), "notifications");
        assert_eq!(Channel::new(p.as_str()).unwrap(), p, "read back, as from a cursor");
        assert_eq!(
            p.partition("3").unwrap().as_str(),
            "notifications#3",
            "a partition of the channel"
        );
        for bad in ["#a", "a#b#c", "a#"] {
            assert!(Channel::new(bad).is_err(), "{bad}");
        }
        assert!(
            Channel::new("x".repeat(47)).unwrap().user_partition("u").is_err(),
            "too long"
        );
    }
}
