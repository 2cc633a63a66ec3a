//! The event envelope (`docs/reference.md`, "Envelope"), as typed Rust.

use std::{borrow::Cow, fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    name::{Channel, EventType},
    trace::Traceparent,
};

/// The id the bus assigns when it stores an event: a Redis stream entry id, `<ms>-<seq>`.
///
/// Ids are ordered within a channel; the memory backend generates them the same way Redis does
/// (milliseconds since the epoch, then a sequence within that millisecond).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Milliseconds since the Unix epoch, as Redis' clock saw them when the event was stored.
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

impl EventId {
    /// The id before every stored event (`0-0`).
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    /// Builds an id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        EventId { ms, seq }
    }

    /// Its text, `<ms>-<seq>`, written into `buf` without the formatting machinery (an id is
    /// written several times per event: the stored body's reply, the envelope, the answer).
    /// `buf` has room for two `u64`s and a dash.
    fn text<'a>(&self, buf: &'a mut [u8; 41]) -> &'a str {
        let mut ms = itoa::Buffer::new();
        let mut seq = itoa::Buffer::new();
        let (ms, seq) = (ms.format(self.ms).as_bytes(), seq.format(self.seq).as_bytes());
        let n = ms.len() + 1 + seq.len();
        buf[..ms.len()].copy_from_slice(ms);
        buf[ms.len()] = b'-';
        buf[ms.len() + 1..n].copy_from_slice(seq);
        std::str::from_utf8(&buf[..n]).expect("ASCII digits")
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; 41]))
    }
}

/// Why a text is not an [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event id {text:?}: expected <milliseconds>-<sequence>, e.g. 1732330000123-0")]
pub struct InvalidEventId {
    /// The rejected text (cut to 64 characters).
    pub text: String,
}

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidEventId {
            text: s.chars().take(64).collect(),
        };
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(EventId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text(&mut [0; 41]))
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What happened to the entity the event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The entity is new.
    Created,
    /// The entity changed.
    Updated,
    /// The entity is gone.
    Deleted,
}

/// The payload: which entity, what happened, and the few fields a toast needs.
///
/// Browsers receive it as is: put identifiers here, never secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// The entity's id (order id, product id, listing id, ...).
    pub id: String,
    /// What happened to it.
    pub action: Action,
    /// Optional small details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Payload {
    /// A payload without details.
    pub fn new(id: impl Into<String>, action: Action) -> Self {
        Payload {
            id: id.into(),
            action,
            data: None,
        }
    }

    /// Adds details.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// The publisher's clock, serialised as JavaScript's `toISOString()` does
/// (`2026-11-23T03:00:00.123Z`); any RFC 3339 time is accepted when parsing, kept to the
/// millisecond it is written with, so an event reads back equal to what was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Now, by this process' clock, to the millisecond.
    pub fn now() -> Self {
        Timestamp(Utc::now().trunc_subsecs(3))
    }

    /// Now, by this process' clock, in milliseconds since the Unix epoch (0 before it).
    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64
    }
}

impl Timestamp {
    /// Its text as `toISOString()` writes it, into `buf` without the formatting machinery
    /// (every event's time is written twice, into its stored body and its envelope), or
    /// `None` for what that form cannot hold: a year outside 0..=9999, a leap second.
    fn iso(&self, buf: &mut [u8; 24]) -> Option<()> {
        use chrono::{Datelike, Timelike};
        let t = &self.0;
        let (year, nanos) = (t.year(), t.nanosecond());
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        let mut put = |at: usize, width: u32, v: u32| {
            for i in 0..width as usize {
                buf[at + i] = b'0' + (v / 10u32.pow(width - 1 - i as u32) % 10) as u8;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        put(20, 3, nanos / 1_000_000);
        for (at, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ] {
            buf[at] = c;
        }
        Some(())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 24];
        match self.iso(&mut buf) {
            Some(()) => f.write_str(std::str::from_utf8(&buf).expect("ASCII")),
            None => f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        match self.iso(&mut buf) {
            Some(()) => s.serialize_str(std::str::from_utf8(&buf).expect("ASCII")),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Timestamp(t.with_timezone(&Utc).trunc_subsecs(3)))
            .map_err(|e| serde::de::Error::custom(format!("timestamp {s:?} is not RFC 3339: {e}")))
    }
}

/// An event as a publisher hands it to the bus: no id yet, the bus assigns it when it stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The event type; it must be one the channel allows.
    pub event_type: EventType,
    /// The payload.
    pub payload: Payload,
    /// The publisher's clock.
    pub timestamp: Timestamp,
    /// Optional idempotency key: a second publish with the same key on the same channel inside
    /// the dedupe window stores nothing and returns the first event's id.
    pub idempotency_key: Option<String>,
    /// The trace context of the job or request that caused it, carried to every subscriber.
    pub traceparent: Option<Traceparent>,
}

impl NewEvent {
    /// An event stamped with the current time and no idempotency key.
    pub fn new(event_type: EventType, payload: Payload) -> Self {
        NewEvent {
            event_type,
            payload,
            timestamp: Timestamp::now(),
            idempotency_key: None,
            traceparent: None,
        }
    }

    /// Sets the trace context.
    pub fn with_traceparent(mut self, traceparent: Option<Traceparent>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// A stored event, as subscribers and browsers receive it (`docs/reference.md`, "Envelope").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Assigned by the bus when the event was stored.
    pub id: EventId,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The channel it was published on: for an event of a partition, the partition, though
    /// its JSON names the channel (what clients follow).
    #[serde(serialize_with = "logical")]
    pub channel: Channel,
    /// The payload.
    pub payload: Payload,
    /// The publisher's clock.
    pub timestamp: Timestamp,
    /// The trace context of the job or request that caused it (absent when none was given).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::trace::lenient"
    )]
    pub traceparent: Option<Traceparent>,
}

impl Envelope {
    /// The envelope as one line of JSON, the form of the pub/sub message and of SSE `data:`.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: no maps with non-string keys, no I/O.
        serde_json::to_string(self).expect("envelope serialises")
    }
}

/// A channel as an event's JSON names it: a partition's events name its channel.
fn logical<C: std::borrow::Borrow<Channel>, S: serde::Serializer>(channel: &C, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(channel.borrow().logical())
}

/// The stored form: the envelope without its id (the stream entry id is the id).
#[derive(Serialize)]
pub(crate) struct BodyRef<'a> {
    #[serde(rename = "type")]
    pub event_type: &'a EventType,
    #[serde(serialize_with = "logical")]
    pub channel: &'a Channel,
    pub payload: &'a Payload,
    pub timestamp: &'a Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: &'a Option<Traceparent>,
}

/// What a stored body or a Node-style plain PUBLISH carries. A `channel` field is ignored: the
/// Phase 27 Node `RealTimeEvent` has none, and the stream key or pub/sub channel names it anyway.
#[derive(Deserialize)]
pub(crate) struct Body {
    #[serde(default)]
    pub id: Option<serde::de::IgnoredAny>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub payload: Payload,
    pub timestamp: Timestamp,
    #[serde(default, deserialize_with = "crate::trace::lenient")]
    pub traceparent: Option<Traceparent>,
}

/// Serialises the stored body of an event (the envelope without `id`).
pub(crate) fn encode_body(channel: &Channel, event: &NewEvent) -> String {
    serde_json::to_string(&BodyRef {
        event_type: &event.event_type,
        channel,
        payload: &event.payload,
        timestamp: &event.timestamp,
        traceparent: &event.traceparent,
    })
    .expect("body serialises")
}

/// Longest `payload.id` an event may have, in bytes: a publish is refused past it, and a
/// stored entry or a plain Node publish past it is malformed (subscribers keep ids: a lagging
/// client's latest-wins map holds one per entity).
pub const MAX_PAYLOAD_ID: usize = 256;

/// Why a stored body or a raw message is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    NotJson(String),
    NotEnvelope(String),
}

/// Parses a stored body (or a Node-style message) into an envelope with the given id.
pub(crate) fn decode_body(channel: &Channel, id: EventId, body: &[u8]) -> Result<Envelope, BodyError> {
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            BodyError::NotEnvelope(e.to_string())
        } else {
            BodyError::NotJson(e.to_string())
        }
    })?;
    if parsed.payload.id.len() > MAX_PAYLOAD_ID {
        return Err(BodyError::NotEnvelope(format!(
            "payload.id is {} bytes; at most {MAX_PAYLOAD_ID}",
            parsed.payload.id.len()
        )));
    }
    Ok(Envelope {
        id,
        event_type: parsed.event_type,
        channel: channel.clone(),
        payload: parsed.payload,
        timestamp: parsed.timestamp,
        traceparent: parsed.traceparent,
    })
}

/// A shared, immutable envelope: what subscribers receive, cheap to fan out.
pub type SharedEnvelope = Arc<Envelope>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the envelope fuzz target (fuzz/artifacts/envelope): a time finer than a
    /// millisecond was kept on decoding but written to the millisecond, so an event read back
    /// differed from itself.
    #[test]
    fn timestamps_keep_the_millisecond_they_are_written_with() {
        let t: Timestamp = serde_json::from_str("\"2026-01-01T00:00:00.066666666Z\"").unwrap();
        assert_eq!(t.to_string(), "2026-01-01T00:00:00.066Z");
        let again: Timestamp = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(again, t);
        let now = Timestamp::now();
        assert_eq!(
            serde_json::from_str::<Timestamp>(&serde_json::to_string(&now).unwrap()).unwrap(),
            now
        );
    }

    /// Also found by the envelope fuzz target: without serde_json's `float_roundtrip`, a long
    /// decimal number in a payload read back one ulp off.
    #[test]
    fn payload_numbers_read_back_exactly() {
        // The crash's number: 887, 124 eights, 0.
        let long = format!("887{}0", "8".repeat(124));
        let v: serde_json::Value = serde_json::from_str(&long).unwrap();
        let again: serde_json::Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        let mut at = Vec::new();
        for (y, mo, d, h, mi, s, ms) in [
            (2026, 1, 1, 0, 0, 0, 0),
            (2026, 12, 31, 23, 59, 59, 999),
            (1970, 1, 1, 0, 0, 0, 1),
            (2000, 2, 29, 12, 5, 9, 40),
            (9999, 12, 31, 23, 59, 59, 999),
            (0, 1, 1, 0, 0, 0, 0),
            (33, 7, 4, 1, 2, 3, 456),
        ] {
            let t = Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + chrono::Duration::milliseconds(ms);
            at.push(Timestamp(t));
        }
        // Outside what the fast form holds: chrono writes them.
        at.push(Timestamp(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap()));
        at.push(Timestamp(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap()));
        at.push(Timestamp::now());
        for t in at {
            let chrono = t.0.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(t.to_string(), chrono);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{chrono}\""));
            if !chrono.starts_with(['+', '-']) {
                assert_eq!(
                    serde_json::from_str::<Timestamp>(&serde_json::to_string(&t).unwrap()).unwrap(),
                    t
                );
            }
        }
    }

    #[test]
    fn ids_are_written_as_their_parts_are() {
        for (ms, seq) in [(0, 0), (1732330000123, 7), (u64::MAX, u64::MAX), (9, 10)] {
            let id = EventId::new(ms, seq);
            assert_eq!(id.to_string(), format!("{ms}-{seq}"));
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{ms}-{seq}\""));
            assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        }
    }

    #[test]
    fn event_id_round_trips_and_orders() {
        let a: EventId = "1732330000123-0".parse().unwrap();
        assert_eq!(a, EventId::new(1732330000123, 0));
        assert_eq!(a.to_string(), "1732330000123-0");
        assert!(a < "1732330000123-1".parse().unwrap());
        assert!("1732330000122-99".parse::<EventId>().unwrap() < a);
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-1-1",
            "+1-0",
            "1 -0",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn envelope_json_matches_contract_example() {
        let text = r#"{"id":"1732330000123-0","type":"ORDER_RECEIVED","channel":"orders","payload":{"id":"ord_81","action":"created","data":{"marketplace":"ebay","total":129.5}},"timestamp":"2026-11-23T03:00:00.123Z"}"#;
        let env: Envelope = serde_json::from_str(text).unwrap();
        assert_eq!(env.event_type, EventType::ORDER_RECEIVED);
        assert_eq!(env.payload.action, Action::Created);
        assert_eq!(env.to_json(), text);
    }

    #[test]
    fn stored_body_plus_id_is_the_envelope() {
        let ev = NewEvent::new(EventType::PRICE_CHANGE, Payload::new("lst_1", Action::Updated));
        let body = encode_body(&Channel::PRICING, &ev);
        let id = EventId::new(5, 7);
        let env = decode_body(&Channel::PRICING, id, body.as_bytes()).unwrap();
        let stamped = format!("{{\"id\":\"{id}\",{}", &body[1..]);
        assert_eq!(env.to_json(), stamped);
    }

    #[test]
    fn bad_bodies_are_classified() {
        let c = Channel::ORDERS;
        assert!(matches!(
            decode_body(&c, EventId::ZERO, b"{not json"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            decode_body(
                &c,
                EventId::ZERO,
                br#"{"type":"X","payload":{"id":"1"},"timestamp":"2026-01-01T00:00:00Z"}"#
            ),
            Err(BodyError::NotEnvelope(_))
        ));
        assert!(matches!(
            decode_body(
                &c,
                EventId::ZERO,
                br#"{"type":"X","payload":{"id":"1","action":"created"},"timestamp":"yesterday"}"#
            ),
            Err(BodyError::NotEnvelope(_))
        ));
    }
}
