//! What a pub/sub message a subscription hears is, read from its head without decoding the
//! envelope.

use crate::envelope::EventId;

/// What a pub/sub message is.
#[derive(Debug, PartialEq)]
pub(super) enum Heard {
    /// A bus publish's announcement: its id and, from this version on, the id before it.
    Announced { id: EventId, prev: Option<EventId> },
    /// Starts with an `id` that is not an event id: stored by someone else, not ours to adopt.
    Stored,
    /// No `id` first: a Node-style plain publish (or garbage, which adoption counts).
    Plain,
}

/// Reads an announcement's head without decoding the envelope.
pub(super) fn heard(bytes: &[u8]) -> Heard {
    let Some(rest) = bytes.strip_prefix(b"{\"id\":") else {
        return Heard::Plain;
    };
    let Some((id, rest)) = quoted_id(rest) else {
        return Heard::Stored;
    };
    let prev = rest.strip_prefix(b",\"prev\":").and_then(quoted_id).map(|(p, _)| p);
    Heard::Announced { id, prev }
}

/// `"<ms>-<seq>"` at the start of `b`, and what follows it.
fn quoted_id(b: &[u8]) -> Option<(EventId, &[u8])> {
    let b = b.strip_prefix(b"\"")?;
    let end = b.iter().take(42).position(|&c| c == b'"')?;
    let id = std::str::from_utf8(&b[..end]).ok()?.parse().ok()?;
    Some((id, &b[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_names_its_id_and_the_one_before() {
        let id = |s: &str| s.parse::<EventId>().unwrap();
        assert_eq!(
            heard(br#"{"id":"5-1","prev":"4-0","type":"X"}"#),
            Heard::Announced {
                id: id("5-1"),
                prev: Some(id("4-0"))
            }
        );
        // An older publisher's announcement: the gap is not known, so the stream is read.
        assert_eq!(
            heard(br#"{"id":"5-1","type":"X"}"#),
            Heard::Announced {
                id: id("5-1"),
                prev: None
            }
        );
        assert_eq!(heard(br#"{"id":"five","type":"X"}"#), Heard::Stored);
        assert_eq!(heard(br#"{"id":5,"type":"X"}"#), Heard::Stored);
        assert_eq!(heard(br#"{"type":"X","id":"5-1"}"#), Heard::Plain);
        assert_eq!(heard(b"not json"), Heard::Plain);
        assert_eq!(
            heard(br#"{"id":"5-1","prev":"x","type":"X"}"#),
            Heard::Announced {
                id: id("5-1"),
                prev: None
            }
        );
    }
}
