//! Entry points of the fuzz targets (`fuzz/`, `make fuzz`) and of their corpus replay in
//! `make test`: each feeds arbitrary bytes to one decoder and panics when an invariant fails.
//! Not an API for anything else.

use fred::types::Value;

use crate::{
    cursor::Cursor,
    envelope::{decode_body, encode_body, Envelope, EventId, NewEvent, MAX_PAYLOAD_ID},
    name::Channel,
    redis::value,
};

/// Cursor and event-id text: parsed or refused, never a panic; what parses prints back to
/// text that parses to the same value.
pub fn cursor(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = text.parse::<Cursor>() {
        let printed = c.to_string();
        let again: Cursor = printed.parse().expect("a printed cursor parses");
        assert_eq!(again.to_string(), printed, "cursor round trip");
        for (channel, id) in c.iter() {
            assert_eq!(again.get(channel), Some(id));
        }
    }
    if let Ok(id) = text.parse::<EventId>() {
        assert_eq!(id.to_string().parse::<EventId>(), Ok(id), "event id round trip");
    }
}

/// Envelopes as subscribers read them, stored bodies, and plain Node publishes: decoded or
/// refused, never a panic; what decodes encodes to what decodes to the same event.
pub fn envelope(data: &[u8]) {
    if let Ok(env) = serde_json::from_slice::<Envelope>(data) {
        let again: Envelope = serde_json::from_str(&env.to_json()).expect("an encoded envelope decodes");
        assert_eq!(again, env, "envelope round trip");
    }
    let channel = Channel::ORDERS;
    let id = EventId::new(1, 0);
    if let Ok(env) = decode_body(&channel, id, data) {
        assert!(
            env.payload.id.len() <= MAX_PAYLOAD_ID,
            "an over-long payload.id decoded"
        );
        let stored = encode_body(
            &channel,
            &NewEvent {
                event_type: env.event_type.clone(),
                payload: env.payload.clone(),
                timestamp: env.timestamp,
                idempotency_key: None,
                traceparent: env.traceparent,
            },
        );
        let again = decode_body(&channel, id, stored.as_bytes()).expect("an encoded body decodes");
        assert_eq!(again, env, "stored body round trip");
    }
}

/// Redis replies of any shape (built from the bytes): every reply decoder answers a value or
/// a protocol error, never a panic.
pub fn redis_reply(data: &[u8]) {
    let mut input = data;
    let v = reply(&mut input, 0);
    let expected = data.first().map_or(0, |b| usize::from(b % 4));
    let _ = value::publish_reply(v.clone(), expected);
    let _ = value::guarded_reply(v.clone());
    let _ = value::stream_state(v.clone());
    let _ = value::xread_reply(v.clone());
    let _ = value::entries(v);
}

/// The checks a publish runs before anything is stored ([`crate::Bus::publish`]), for the
/// gateway's publish target: refused events name their reason, never a panic.
pub fn check_publish(config: &crate::BusConfig, channel: &Channel, event: &NewEvent) -> Result<(), crate::BusError> {
    crate::rules::check_event(config, channel, event)
}

/// One reply value from `input`: a tag byte, then what the tag needs (arrays nest 4 deep).
fn reply(input: &mut &[u8], depth: usize) -> Value {
    let Some((&tag, rest)) = input.split_first() else {
        return Value::Null;
    };
    *input = rest;
    let mut take = |n: usize| {
        let n = n.min(input.len());
        let (head, tail) = input.split_at(n);
        *input = tail;
        head
    };
    match tag % 7 {
        0 => Value::Null,
        1 => {
            let mut b = [0u8; 8];
            let got = take(8);
            b[..got.len()].copy_from_slice(got);
            Value::Integer(i64::from_le_bytes(b))
        }
        2 => {
            let n = take(1).first().copied().unwrap_or(0) as usize;
            Value::String(String::from_utf8_lossy(take(n)).into_owned().into())
        }
        3 => {
            let n = take(1).first().copied().unwrap_or(0) as usize;
            Value::Bytes(take(n).to_vec().into())
        }
        // Something shaped like a stream id, so decoders get past their first check.
        4 => {
            let b = take(3);
            let ms = b.first().copied().unwrap_or(0) as u64 * 1000 + b.get(1).copied().unwrap_or(0) as u64;
            Value::String(format!("{ms}-{}", b.get(2).copied().unwrap_or(0)).into())
        }
        5 => Value::String(
            ["last-generated-id", "max-deleted-entry-id", "first-entry", "e"][usize::from(tag / 7) % 4].into(),
        ),
        _ if depth >= 4 => Value::Null,
        _ => {
            let n = take(1).first().copied().unwrap_or(0) as usize % 9;
            Value::Array((0..n).map(|_| reply(input, depth + 1)).collect())
        }
    }
}
