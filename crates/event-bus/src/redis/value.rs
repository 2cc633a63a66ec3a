//! Turning Redis replies into the bus' types, tolerating what a foreign writer may have left.

use fred::types::Value;

use crate::{
    envelope::EventId,
    error::BusError,
    publish::{Guarded, Published},
    rules::StreamState,
};

fn protocol(context: &'static str, detail: impl Into<String>) -> BusError {
    BusError::Protocol {
        context,
        detail: detail.into(),
    }
}

fn id_of(v: &Value, context: &'static str) -> Result<EventId, BusError> {
    let text = v
        .as_str()
        .ok_or_else(|| protocol(context, format!("id is {:?}", v.kind())))?;
    text.parse().map_err(|e| protocol(context, format!("{e}")))
}

/// A flat `[k, v, k, v, ...]` array or a map, as key/value pairs.
fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| k.as_str().map(|k| (k.to_owned(), v)))
            .collect(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = k.as_str() {
                    out.push((k.into_owned(), v));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The publish script's `[id, stored, id, stored, ...]`.
pub(crate) fn publish_reply(v: Value, expected: usize) -> Result<Vec<Published>, BusError> {
    const CTX: &str = "the publish script";
    let items = match v {
        Value::Array(items) => items,
        other => return Err(protocol(CTX, format!("{:?}", other.kind()))),
    };
    if items.len() != expected * 2 {
        return Err(protocol(CTX, format!("{} values for {expected} events", items.len())));
    }
    items
        .chunks(2)
        .map(|pair| {
            Ok(Published {
                id: id_of(&pair[0], CTX)?,
                duplicate: pair[1].as_i64() == Some(0),
            })
        })
        .collect()
}

/// The guarded script's `{id, 1|0}`, `{'', -1, current, exists}` or `{'', 2}`.
pub(crate) fn guarded_reply(v: Value) -> Result<Guarded, BusError> {
    const CTX: &str = "the guarded publish script";
    let items = match v {
        Value::Array(items) if items.len() >= 2 => items,
        other => return Err(protocol(CTX, format!("{:?}", other.kind()))),
    };
    Ok(match items[1].as_i64() {
        Some(1) | Some(0) => Guarded::Done(Published {
            id: id_of(&items[0], CTX)?,
            duplicate: items[1].as_i64() == Some(0),
        }),
        Some(2) => Guarded::Done(Published {
            id: EventId::ZERO,
            duplicate: false,
        }),
        Some(-1) => Guarded::Conflict {
            current: (items.get(3).and_then(Value::as_i64) == Some(1))
                .then(|| items.get(2).and_then(|v| v.as_string()).unwrap_or_default()),
        },
        other => return Err(protocol(CTX, format!("status {other:?}"))),
    })
}

/// `XINFO STREAM` (Redis 7): last-generated-id, max-deleted-entry-id, first-entry.
pub(crate) fn stream_state(v: Value) -> Result<StreamState, BusError> {
    const CTX: &str = "XINFO STREAM";
    let mut state = StreamState {
        exists: true,
        last_generated: EventId::ZERO,
        max_deleted: EventId::ZERO,
        first_entry: None,
    };
    let mut saw_max_deleted = false;
    for (k, v) in pairs(v) {
        match k.as_str() {
            "last-generated-id" => state.last_generated = id_of(&v, CTX)?,
            "max-deleted-entry-id" => {
                state.max_deleted = id_of(&v, CTX)?;
                saw_max_deleted = true;
            }
            "first-entry" if !v.is_null() => {
                if let Value::Array(entry) = v {
                    state.first_entry = entry.first().map(|id| id_of(id, CTX)).transpose()?;
                }
            }
            _ => {}
        }
    }
    if !saw_max_deleted {
        return Err(protocol(CTX, "no max-deleted-entry-id: Redis 7.0 or newer is required"));
    }
    Ok(state)
}

/// One stream entry as read: its id and the envelope field, if the entry has one.
pub(crate) struct RawEntry {
    pub id: EventId,
    pub body: Option<Vec<u8>>,
}

/// `XREAD`'s `[[key, [[id, [field, value, ...]], ...]], ...]` (or a map of key to entries).
pub(crate) fn xread_reply(v: Value) -> Result<Vec<(String, Vec<RawEntry>)>, BusError> {
    const CTX: &str = "XREAD";
    let streams: Vec<(String, Value)> = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Map(_) => pairs(v),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop().expect("len 2");
                    let key = kv.pop().expect("len 2");
                    key.as_string().map(|k| (k, entries))
                }
                _ => None,
            })
            .collect(),
        other => return Err(protocol(CTX, format!("{:?}", other.kind()))),
    };
    streams
        .into_iter()
        .map(|(key, entries)| Ok((key, self::entries(entries)?)))
        .collect()
}

/// A list of stream entries, `[[id, [field, value, ...]], ...]` (XRANGE, and inside XREAD).
pub(crate) fn entries(v: Value) -> Result<Vec<RawEntry>, BusError> {
    v.into_array()
        .into_iter()
        .map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = id_of(&parts.next().unwrap_or(Value::Null), "stream entry")?;
            let body = pairs(parts.next().unwrap_or(Value::Null))
                .into_iter()
                .find(|(f, _)| f == "e")
                .and_then(|(_, v)| v.as_bytes().map(<[u8]>::to_vec));
            Ok(RawEntry { id, body })
        })
        .collect()
}
