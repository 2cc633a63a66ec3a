//! [`Traceparent`]: the W3C trace context (`traceparent`, version `00`) of the job or request
//! that caused an event. It travels in the envelope, so every hop (the publisher, the bus, each
//! gateway's fan-out) can name the same trace in its logs and spans (`docs/reference.md`,
//! "Envelope").

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A trace id (16 bytes), the id of the span that caused the event (8 bytes), and whether the
/// trace is sampled. Neither id is all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traceparent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl Traceparent {
    /// From the two ids; `None` when either is all zeros (invalid in W3C trace context).
    pub fn from_ids(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Traceparent {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the span that caused the event.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// Whether the trace is sampled (flag `01`).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The trace id as 32 lowercase hex digits, as logs name it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; 2 * bytes.len()];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Writes `bytes` as lowercase hex into `out` (twice as long): no allocation, no formatter
/// (a publish writes its event's traceparent into the stored JSON; 24 `format!`s per event were
/// a seventh of an HTTP publish's instructions).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[(b >> 4) as usize];
        o[1] = DIGITS[(b & 0xf) as usize];
    }
}

/// `text` as `N` bytes of lowercase hex, digit by digit (every event read carries one).
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

impl Traceparent {
    /// Its text: `00-` 32 hex `-` 16 hex `-` 2 hex.
    fn text(&self) -> [u8; 55] {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut text[3..35]);
        hex_into(&self.span_id, &mut text[36..52]);
        if self.sampled {
            text[54] = b'1';
        }
        text
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.text()).expect("ASCII"))
    }
}

impl fmt::Debug for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Traceparent({self})")
    }
}

/// Why a `traceparent` is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, lowercase, ids not all zero): {0:?}")]
pub struct BadTraceparent(pub String);

impl FromStr for Traceparent {
    type Err = BadTraceparent;

    /// `00-<trace id>-<span id>-<flags>`; a later version is read by the same first four
    /// fields, as the W3C recommendation says; version `ff` is invalid.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadTraceparent(s.chars().take(80).collect());
        let mut parts = s.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let version = unhex::<1>(version).ok_or_else(bad)?[0];
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return Err(bad());
        }
        let flags = unhex::<1>(flags).ok_or_else(bad)?[0];
        let (trace, span) = (unhex::<16>(trace).ok_or_else(bad)?, unhex::<8>(span).ok_or_else(bad)?);
        Traceparent::from_ids(trace, span, flags & 1 == 1).ok_or_else(bad)
    }
}

impl Serialize for Traceparent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As a string at once: `collect_str` escapes the text piece by piece.
        s.serialize_str(std::str::from_utf8(&self.text()).expect("ASCII"))
    }
}

impl<'de> Deserialize<'de> for Traceparent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Reads an optional `traceparent` leniently: a malformed one is dropped, never the event that
/// carries it (a Node publisher's typo must not lose an order).
pub(crate) fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Traceparent>, D::Error> {
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// A string is read in place (no value built first); anything else is passed over.
    struct Lenient;

    impl<'de> Visitor<'de> for Lenient {
        type Value = Option<Traceparent>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a traceparent (anything else is dropped)")
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.parse().ok())
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Lenient)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }

    d.deserialize_any(Lenient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_w3c_example_round_trips_and_bad_ones_are_refused() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t: Traceparent = text.parse().unwrap();
        assert_eq!(t.to_string(), text);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled());
        let future: Traceparent = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more"
            .parse()
            .unwrap();
        assert!(!future.sampled());
        assert_eq!(
            future.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<Traceparent>().is_err(), "{bad:?}");
        }
        for bad_hex in ["0g", "+1", " 1", "1", "0A"] {
            assert!(unhex::<1>(bad_hex).is_none(), "{bad_hex:?}");
        }
        assert_eq!(unhex::<2>("0aff"), Some([0x0a, 0xff]));
    }

    #[test]
    fn a_traceparent_of_any_other_shape_is_dropped_and_what_follows_it_is_read() {
        #[derive(serde::Deserialize)]
        struct Carrier {
            #[serde(default, deserialize_with = "lenient")]
            traceparent: Option<Traceparent>,
            after: u8,
        }
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let read = |tp: &str| -> Option<Traceparent> {
            let c: Carrier = serde_json::from_str(&format!(r#"{{"traceparent":{tp},"after":7}}"#)).unwrap();
            assert_eq!(c.after, 7, "{tp}");
            c.traceparent
        };
        assert_eq!(read(&format!("\"{good}\"")), Some(good.parse().unwrap()));
        // Escaped: serde_json hands over an owned string.
        assert_eq!(
            read(&format!("\"{}\\u0030\"", &good[..54])),
            Some(good[..54].to_owned() + "0").and_then(|t| t.parse().ok())
        );
        for other in [
            "null",
            "\"nope\"",
            "12",
            "-3",
            "1.5",
            "true",
            "[1,[2],{\"a\":3}]",
            r#"{"a":{"b":[1]}}"#,
        ] {
            assert_eq!(read(other), None, "{other}");
        }
        let c: Carrier = serde_json::from_str(r#"{"after":1}"#).unwrap();
        assert_eq!(c.traceparent, None);
    }
}
