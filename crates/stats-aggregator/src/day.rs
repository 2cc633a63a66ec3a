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
//! # Field names
//! The fields, keys and time rules are the shared schema's ([`stats_schema`]), re-exported
//! here; `progress:<channel>` is the marker, written by the same script call as the
//! increments it covers.

use std::collections::BTreeMap;

use chrono::{NaiveDate, Timelike};
use event_bus::{EventId, MalformedKind, SharedEnvelope};
pub use stats_schema::{
    fields::FIELDS,
    keys::{day_key, progress_field},
    time::{at, day_of, day_start_secs, days, parse_day},
};

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
                    add(format!("channel:{}", env.channel.logical()));
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

/// The id just before `id` (reading "after" it starts at `id`).
pub fn just_before(id: EventId) -> EventId {
    if id.seq > 0 {
        EventId::new(id.ms, id.seq - 1)
    } else if id.ms > 0 {
        EventId::new(id.ms - 1, u64::MAX)
    } else {
        EventId::ZERO
    }
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
            traceparent: None,
        }))
    }

    #[test]
    fn the_id_just_before() {
        assert_eq!(just_before(EventId::new(5, 0)), EventId::new(4, u64::MAX));
        assert_eq!(just_before(EventId::new(5, 2)), EventId::new(5, 1));
        assert_eq!(just_before(EventId::ZERO), EventId::ZERO);
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
}
