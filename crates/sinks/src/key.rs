//! The idempotency key of one (event, destination): the same on every attempt, every replica and
//! after every restart, so a destination that honours it (LINE's `X-Line-Retry-Key`, the Standard
//! Webhooks `webhook-id`, the inbox's idempotency key) takes the event once.

use event_bus::{Channel, EventId};
use sha2::{Digest, Sha256};

/// The key of `event` on `channel` (or of a digest ending with it) for `destination`: a UUID
/// (version 8, RFC 9562) made from their SHA-256, because LINE wants a UUID.
pub fn of(channel: &Channel, event: EventId, destination: &str) -> uuid::Uuid {
    let hash = Sha256::digest(format!("{channel}\u{0}{event}\u{0}{destination}"));
    let bytes: [u8; 16] = hash[..16].try_into().expect("16 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The key of route `route`'s digest of the window starting at `start_ms` on `channel`, for
/// `destination`.
pub fn of_window(channel: &Channel, route: &str, start_ms: u64, destination: &str) -> uuid::Uuid {
    of(
        channel,
        EventId::new(start_ms, 0),
        &format!("digest\u{0}{route}\u{0}{destination}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_per_event_and_destination() {
        let (c, id) = (Channel::ORDERS, EventId::new(1, 0));
        assert_eq!(of(&c, id, "slack"), of(&c, id, "slack"), "stable");
        assert_ne!(of(&c, id, "slack"), of(&c, id, "line"));
        assert_ne!(of(&c, id, "slack"), of(&c, EventId::new(1, 1), "slack"));
        assert_ne!(of(&c, id, "slack"), of(&Channel::PRICING, id, "slack"));
        assert_eq!(of(&c, id, "slack").get_version_num(), 8);
    }
}
