//! The daily hash: which day an entry belongs to, its field names, what a batch adds to them,
//! and the hash read back as JSON.
//!
//! # Which day
//! An entry counts on the UTC day (and hour) of its **stream id**: the moment the bus accepted
//! it, the same moment every dashboard saw it live. Stream ids only grow, so a channel's entries
//! reach the days in order and each day's progress marker is a plain "last id applied". The
//! publisher's own `timestamp` can be skewed or old (a Node producer re-sending yesterday's
//! event); such an event is still counted when it was accepted, and additionally in `late` when
//! its timestamp lies on an earlier UTC day. Counts therefore never change after a day is over
//! (except by a catch-up of entries accepted that day), and midnight needs no special case:
//! a batch that spans it is split by id time and applied to both days.
//!
//! # Field names (documented in proto-schemas/README.md)
//! See [`FIELDS`] for the list; `progress:<channel>` is the marker, written by the same script
//! call as the increments it covers.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use event_bus::{EventId, MalformedKind, SharedEnvelope};
use serde_json::{json, Map, Value};

/// Every field of a daily hash, as documented (`<...>` is a placeholder).
pub const FIELDS: &[(&str, &str)] = &[
    ("events", "events counted on this day"),
    ("type:<TYPE>", "events per type"),
    ("channel:<channel>", "events per channel"),
    ("action:<action>", "events per payload action"),
    ("hour:<HH>", "events per UTC hour 00..23 (by acceptance time)"),
    (
        "first_event_ms",
        "acceptance time (stream id, Unix ms) of the day's first event",
    ),
    ("last_event_ms", "acceptance time of the day's last event"),
    (
        "late",
        "events whose own timestamp lies on an earlier UTC day than their acceptance",
    ),
    ("malformed", "stream entries that are not events, skipped"),
    (
        "malformed:<kind>",
        "by kind: not_json, not_envelope, unknown_type, bad_entry",
    ),
    (
        "progress:<channel>",
        "the last stream id of the channel aggregated into this hash",
    ),
    (
        "gw:connections_peak",
        "highest sum of open connections over all gateways, sampled",
    ),
    ("gw:connections_peak_ms", "when that peak was sampled (Unix ms)"),
    ("gw:connections_total", "streams opened"),
    (
        "gw:reconnects_total",
        "streams opened with a cursor (a client resuming)",
    ),
    ("gw:delivered_total", "events written to clients"),
    ("gw:slow_consumer_disconnects_total", "clients cut for not keeping up"),
    (
        "gw:latency_le_<seconds>",
        "delivery latency histogram, cumulative count per bucket",
    ),
    ("gw:latency_count", "deliveries measured for latency"),
    (
        "gwbase:<instance>:<field>",
        "the last gateway counter value folded in (for deltas)",
    ),
];

/// The UTC day of a stream id.
pub fn day_of(id: EventId) -> NaiveDate {
    at(id.ms).date_naive()
}

/// A Unix-ms instant as UTC time (clamped to the representable range).
pub fn at(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms.min(i64::MAX as u64) as i64)
        .single()
        .unwrap_or_default()
}

/// Midnight UTC at the start of `day`, in Unix seconds.
pub fn day_start_secs(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp()
}

/// `<prefix>stats:<YYYY-MM-DD>`.
pub fn day_key(prefix: &str, day: NaiveDate) -> String {
    format!("{prefix}stats:{}", day.format("%Y-%m-%d"))
}

/// The marker field of a channel.
pub fn progress_field(channel: &str) -> String {
    format!("progress:{channel}")
}

/// One stream entry as the aggregator sees it.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A well-formed event.
    Event(SharedEnvelope),
    /// A malformed entry, skipped but counted.
    Malformed(EventId, MalformedKind),
}

impl Entry {
    /// The entry's stream id.
    pub fn id(&self) -> EventId {
        match self {
            Entry::Event(e) => e.id,
            Entry::Malformed(id, _) => *id,
        }
    }
}

/// What a run of one channel's entries, all of one day, adds to that day's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// The day.
    pub day: NaiveDate,
    /// The first and last stream id covered (malformed entries included).
    pub first: EventId,
    /// See `first`.
    pub last: EventId,
    /// Acceptance time of the first and last *event* (none when all were malformed).
    pub event_ms: Option<(u64, u64)>,
    /// Field increments.
    pub incr: BTreeMap<String, i64>,
    /// Entries covered.
    pub entries: usize,
}

impl Tally {
    /// Tallies `entries` (one channel, ascending ids) into one [`Tally`] per day, in order.
    pub fn split(entries: &[Entry]) -> Vec<Tally> {
        let mut out: Vec<Tally> = Vec::new();
        for entry in entries {
            let id = entry.id();
            let day = day_of(id);
            let t = match out.last_mut() {
                Some(t) if t.day == day => t,
                _ => {
                    out.push(Tally {
                        day,
                        first: id,
                        last: id,
                        event_ms: None,
                        incr: BTreeMap::new(),
                        entries: 0,
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            t.last = id;
            t.entries += 1;
            let mut add = |field: String| *t.incr.entry(field).or_default() += 1;
            match entry {
                Entry::Event(env) => {
                    add("events".into());
                    add(format!("type:{}", env.event_type));
                    add(format!("channel:{}", env.channel));
                    add(format!("action:{}", action_name(&env.payload.action)));
                    add(format!("hour:{:02}", at(id.ms).hour()));
                    if env.timestamp.0.date_naive() < day {
                        add("late".into());
                    }
                    t.event_ms = Some(match t.event_ms {
                        None => (id.ms, id.ms),
                        Some((first, _)) => (first, id.ms),
                    });
                }
                Entry::Malformed(_, kind) => {
                    add("malformed".into());
                    add(format!("malformed:{}", kind.as_str()));
                }
            }
        }
        out
    }

    /// The tally of only the entries after `marker` (for a batch another run partly applied).
    pub fn after(entries: &[Entry], day: NaiveDate, marker: EventId) -> Option<Tally> {
        let rest: Vec<Entry> = entries
            .iter()
            .filter(|e| e.id() > marker && day_of(e.id()) == day)
            .cloned()
            .collect();
        Tally::split(&rest).into_iter().next()
    }
}

fn action_name(a: &event_bus::Action) -> &'static str {
    match a {
        event_bus::Action::Created => "created",
        event_bus::Action::Updated => "updated",
        event_bus::Action::Deleted => "deleted",
    }
}

/// The gateway counters folded into the day (fields of `rakuda:realtime:gateway:<instance>`).
pub fn is_gateway_counter(field: &str) -> bool {
    field.ends_with("_total") || field.starts_with("latency_le_") || field == "latency_count"
}

/// A daily hash read back, as the JSON of `proto-schemas/daily-stats.schema.json`.
pub fn daily_json(day: NaiveDate, hash: &HashMap<String, String>) -> Value {
    let num = |k: &str| hash.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let group = |prefix: &str| -> Map<String, Value> {
        let mut m: Vec<(&str, i64)> = hash
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v.parse::<i64>().ok()?)))
            .collect();
        m.sort();
        m.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect()
    };
    let hours: Vec<i64> = (0..24).map(|h| num(&format!("hour:{h:02}"))).collect();
    let time = |k: &str| {
        hash.get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| json!(event_bus::Timestamp(at(ms)).to_string()))
            .unwrap_or(Value::Null)
    };
    let mut malformed = group("malformed:");
    malformed.insert("total".into(), json!(num("malformed")));
    let progress: Map<String, Value> = hash
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("progress:")?.to_owned(), json!(v))))
        .collect();

    // Gateways: merged histogram buckets, so percentiles are of all deliveries of the day.
    let mut buckets: Vec<(f64, u64)> = hash
        .iter()
        .filter_map(|(k, v)| {
            let bound = k.strip_prefix("gw:latency_le_")?.parse::<f64>().ok()?;
            Some((bound, v.parse::<u64>().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = num("gw:latency_count").max(0) as u64;
    let quantile = |q: f64| quantile_ms(&buckets, count, q).map_or(Value::Null, |v| json!(v));
    let opened = num("gw:connections_total");
    let reconnects = num("gw:reconnects_total");
    json!({
        "date": day.format("%Y-%m-%d").to_string(),
        "events": num("events"),
        "by_type": group("type:"),
        "by_channel": group("channel:"),
        "by_action": group("action:"),
        "hours": hours,
        "first_event_at": time("first_event_ms"),
        "last_event_at": time("last_event_ms"),
        "late": num("late"),
        "malformed": malformed,
        "progress": progress,
        "gateways": {
            "connections_peak": num("gw:connections_peak"),
            "connections_peak_at": time("gw:connections_peak_ms"),
            "connections_opened": opened,
            "reconnects": reconnects,
            "reconnect_rate": if opened > 0 { json!(reconnects as f64 / opened as f64) } else { Value::Null },
            "delivered": num("gw:delivered_total"),
            "slow_consumer_disconnects": num("gw:slow_consumer_disconnects_total"),
            "latency_p50_ms": quantile(0.5),
            "latency_p99_ms": quantile(0.99),
        },
    })
}

/// The upper bound, in ms, of the histogram bucket holding quantile `q` of `count` samples;
/// `buckets` are (upper bound in seconds, cumulative count), ascending. `None` without samples
/// (or when the quantile is only in the `+Inf` bucket).
pub fn quantile_ms(buckets: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = (q * count as f64).ceil() as u64;
    buckets
        .iter()
        .find(|(_, c)| *c >= rank)
        .map(|(b, _)| b * 1000.0)
        .filter(|v| v.is_finite())
}

/// The days from `from` to `to`, inclusive.
pub fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|d| d.year() >= 1970 && text.len() == 10)
        .ok_or_else(|| format!("{text:?} is not a date of the form YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Action, Channel, Envelope, EventType, Payload, Timestamp};
    use std::sync::Arc;

    fn ev(ms: u64, ty: EventType, ts_ms: u64) -> Entry {
        Entry::Event(Arc::new(Envelope {
            id: EventId::new(ms, 0),
            event_type: ty,
            channel: Channel::ORDERS,
            payload: Payload::new("x", Action::Created),
            timestamp: Timestamp(at(ts_ms)),
        }))
    }

    #[test]
    fn midnight_splits_a_batch_and_late_is_by_timestamp() {
        // 2026-11-23T23:59:59.999Z and 2026-11-24T00:00:00.000Z.
        let before = 1_795_478_399_999;
        let after = before + 1;
        let entries = [
            ev(before, EventType::ORDER_RECEIVED, before),
            Entry::Malformed(EventId::new(before, 1), MalformedKind::NotJson),
            ev(after, EventType::ORDER_RECEIVED, before), // accepted after midnight, stamped before
        ];
        let t = Tally::split(&entries);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].day.to_string(), "2026-11-23");
        assert_eq!(t[1].day.to_string(), "2026-11-24");
        assert_eq!(
            (t[0].first, t[0].last),
            (EventId::new(before, 0), EventId::new(before, 1))
        );
        assert_eq!(t[0].incr["events"], 1);
        assert_eq!(t[0].incr["hour:23"], 1);
        assert_eq!(t[0].incr["malformed:not_json"], 1);
        assert_eq!(t[0].event_ms, Some((before, before)));
        assert_eq!(t[1].incr["hour:00"], 1);
        assert_eq!(t[1].incr["late"], 1);
        assert!(!t[0].incr.contains_key("late"));
        let rest = Tally::after(&entries, t[0].day, EventId::new(before, 0)).unwrap();
        assert_eq!(rest.incr.get("events"), None);
        assert_eq!(rest.incr["malformed"], 1);
    }

    #[test]
    fn json_merges_buckets_and_names_hours() {
        let h: HashMap<String, String> = [
            ("events", "3"),
            ("type:ORDER_RECEIVED", "3"),
            ("hour:05", "3"),
            ("gw:latency_le_0.001", "99"),
            ("gw:latency_le_1", "100"),
            ("gw:latency_count", "100"),
            ("gw:connections_total", "4"),
            ("gw:reconnects_total", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let j = daily_json(parse_day("2026-11-23").unwrap(), &h);
        assert_eq!(j["hours"][5], 3);
        assert_eq!(j["by_type"]["ORDER_RECEIVED"], 3);
        assert_eq!(j["gateways"]["latency_p50_ms"], 1.0);
        assert_eq!(j["gateways"]["latency_p99_ms"], 1.0);
        assert_eq!(j["gateways"]["reconnect_rate"], 0.25);
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("2026-1-01").is_err());
    }
}

#[cfg(test)]
mod doc_tests {
    /// Every documented field name appears in proto-schemas/README.md.
    #[test]
    fn fields_are_documented() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto-schemas/README.md"))
            .expect("proto-schemas/README.md");
        for (field, _) in super::FIELDS {
            assert!(readme.contains(&format!("`{field}`")), "{field} is not documented");
        }
    }
}
