//! The rules both backends follow, in one place: what an event and a channel list must be,
//! which types a channel carries, the gap rule and the RESYNC answer of a replay.

use crate::{
    bus::Replay,
    config::BusConfig,
    envelope::{EventId, NewEvent, MAX_PAYLOAD_ID},
    error::BusError,
    name::{Channel, EventType},
    stats::{BusStats, MalformedKind},
};

/// What a store knows about one channel's stream, for the gap check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamState {
    pub exists: bool,
    pub last_generated: EventId,
    pub max_deleted: EventId,
    pub first_entry: Option<EventId>,
}

/// Decides whether a reader at `pos` can go on, or must report a gap and continue elsewhere.
///
/// A legitimate position is `0-0` (the stream did not exist when the subscriber started) or at
/// or after the stream's first entry ever. So: a position past the last generated id (from
/// another store), entries deleted after the position (retention), or a non-zero position
/// before the first entry of an untrimmed stream or in a missing stream (the store lost its
/// data and started again) each mean events may be gone. Delivery then resumes at the head.
pub(crate) fn gap_check(pos: EventId, s: &StreamState) -> Option<EventId> {
    let lost = if !s.exists {
        pos != EventId::ZERO
    } else {
        pos > s.last_generated
            || s.max_deleted > pos
            || (pos != EventId::ZERO
                && s.max_deleted == EventId::ZERO
                && s.first_entry.is_some_and(|first| pos < first))
    };
    lost.then_some(if s.exists { s.last_generated } else { EventId::ZERO })
}

/// Whether the gap rule also needs to know if the entry at `pos` itself is still there: a
/// non-zero position the store has not trimmed past, in a stream that exists. (A position is
/// always the id of an event a reader got.)
pub(crate) fn needs_probe(pos: EventId, s: &StreamState) -> bool {
    s.exists && pos != EventId::ZERO && pos > s.max_deleted && gap_check(pos, s).is_none()
}

/// The probe's answer read by the gap rule: the entry at the position is gone although
/// nothing was trimmed past it, so the store lost it, and perhaps more before it. That is a
/// failover to a replica that never got the newest events, after new events were written
/// there. (A check before any new write sees the position past `last_generated` instead.)
/// Delivery then goes on from the newest entry the store has before the position: what was
/// written after the failover still arrives, after the RESYNC.
pub(crate) fn entry_lost(pos: EventId, s: &StreamState, entry_present: bool) -> bool {
    needs_probe(pos, s) && !entry_present
}

/// Checks an event against the channel configuration before it is stored.
pub(crate) fn check_event(config: &BusConfig, channel: &Channel, event: &NewEvent) -> Result<(), BusError> {
    let spec = config
        .spec(channel)
        .ok_or_else(|| BusError::UnknownChannel(channel.clone()))?;
    if !spec.types.is_empty() && !spec.types.contains(&event.event_type) && event.event_type != EventType::ACK {
        return Err(BusError::UnknownType {
            channel: channel.clone(),
            event_type: event.event_type.clone(),
        });
    }
    // Subscribers keep ids (latest-wins keeps one entry per entity): no unbounded ones.
    if event.payload.id.len() > MAX_PAYLOAD_ID {
        return Err(BusError::PayloadIdTooLong(event.payload.id.len()));
    }
    if let Some(key) = &event.idempotency_key {
        let ok =
            !key.is_empty() && key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if !ok {
            return Err(BusError::InvalidIdempotencyKey(key.chars().take(210).collect()));
        }
    }
    Ok(())
}

/// A batch to publish, each event in its stream (a channel with partitions: its entity's) and
/// checked there; an error if any event is refused, before anything is stored.
pub(crate) fn placed(
    config: &BusConfig,
    events: Vec<(Channel, NewEvent)>,
) -> Result<Vec<(Channel, NewEvent)>, BusError> {
    let events: Vec<(Channel, NewEvent)> = events
        .into_iter()
        .map(|(c, e)| (config.place(&c, &e.payload.id), e))
        .collect();
    for (channel, event) in &events {
        check_event(config, channel, event)?;
    }
    Ok(events)
}

/// Checks that `channel` is one stream (a replay reads one): not a channel with partitions.
pub(crate) fn check_stream(config: &BusConfig, channel: &Channel) -> Result<(), BusError> {
    check_channels(config, std::slice::from_ref(channel))?;
    if config.streams_of(channel).first() != Some(channel) {
        return Err(BusError::Partitioned(channel.clone()));
    }
    Ok(())
}

/// Where a subscription to `channels` from `from` starts in each of their streams: the
/// cursor's position, or `None` for the stream's head; and `true` where that head comes after
/// a RESYNC because the channel's partitions changed since the cursor was written.
pub(crate) fn starts(
    config: &BusConfig,
    channels: &[Channel],
    from: Option<&crate::cursor::Cursor>,
) -> Vec<(Channel, Option<EventId>, bool)> {
    let mut out = Vec::new();
    for c in channels {
        let changed = from.is_some_and(|f| config.partitions_changed(c, f));
        for s in config.streams_of(c) {
            let pos = if changed { None } else { from.and_then(|f| f.get(&s)) };
            out.push((s, pos, changed));
        }
    }
    out
}

/// A subscription's channel with the RESYNCs it starts with (the streams of channels whose
/// partitions changed, each at its head) already in it, counted.
pub(crate) fn resynced(
    config: &BusConfig,
    stats: &BusStats,
    resyncs: Vec<(Channel, EventId)>,
) -> (
    tokio::sync::mpsc::Sender<crate::subscription::Delivery>,
    tokio::sync::mpsc::Receiver<crate::subscription::Delivery>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(config.read_batch.max(resyncs.len() + 1));
    for (channel, resume_from) in resyncs {
        stats.resync();
        tx.try_send(crate::subscription::Delivery::Resync { channel, resume_from })
            .expect("room was made for them");
    }
    (tx, rx)
}

/// Checks a channel list for subscribe/head.
pub(crate) fn check_channels(config: &BusConfig, channels: &[Channel]) -> Result<(), BusError> {
    for c in channels {
        if config.spec(c).is_none() {
            return Err(BusError::UnknownChannel(c.clone()));
        }
    }
    Ok(())
}

/// Whether a stored or announced event's type is one its channel allows.
pub(crate) fn type_allowed(
    config: &BusConfig,
    env: &crate::envelope::Envelope,
    stats: &BusStats,
    source: impl FnOnce() -> String,
) -> bool {
    match config.spec(&env.channel) {
        Some(spec)
            if spec.types.is_empty() || spec.types.contains(&env.event_type) || env.event_type == EventType::ACK =>
        {
            true
        }
        _ => {
            stats.malformed(
                MalformedKind::UnknownType,
                &source(),
                &format!("type {} on channel {}", env.event_type, env.channel),
            );
            false
        }
    }
}

/// The answer of a replay from `after` when the gap rule said events are gone: RESYNC from
/// `resume_from`, where the stream can go on, with its oldest entry (counted in `stats`).
pub(crate) fn resync_page(after: EventId, resume_from: EventId, state: &StreamState, stats: &BusStats) -> Replay {
    stats.resync();
    Replay {
        resync: Some(resume_from),
        oldest: state.first_entry,
        last: after,
        ..Replay::default()
    }
}

/// Checks an entity name: the part of a Redis key after the channel.
pub(crate) fn check_entity(entity: &str) -> Result<(), BusError> {
    if entity.is_empty() || entity.len() > 512 || entity.chars().any(char::is_control) {
        return Err(BusError::InvalidEntity(entity.chars().take(64).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> EventId {
        EventId::new(ms, 0)
    }

    #[test]
    fn a_payload_id_has_a_length_limit() {
        use crate::envelope::{Action, Payload};
        let config = BusConfig::default();
        let event = |id: String| {
            NewEvent::new(
                crate::name::EventType::ORDER_RECEIVED,
                Payload::new(id, Action::Created),
            )
        };
        check_event(&config, &Channel::ORDERS, &event("o".repeat(MAX_PAYLOAD_ID))).unwrap();
        let err = check_event(&config, &Channel::ORDERS, &event("o".repeat(MAX_PAYLOAD_ID + 1))).unwrap_err();
        assert!(matches!(err, BusError::PayloadIdTooLong(257)), "{err}");
    }

    #[test]
    fn gap_rule() {
        let s = |last, deleted, first: Option<u64>| StreamState {
            exists: true,
            last_generated: id(last),
            max_deleted: id(deleted),
            first_entry: first.map(id),
        };
        // Untrimmed stream: any position inside is fine, 0-0 too.
        assert_eq!(gap_check(id(0), &s(10, 0, Some(5))), None);
        assert_eq!(gap_check(id(7), &s(10, 0, Some(5))), None);
        assert_eq!(gap_check(id(10), &s(10, 0, Some(5))), None);
        // Position from the future: another store.
        assert_eq!(gap_check(id(11), &s(10, 0, Some(5))), Some(id(10)));
        // Trimmed past the position.
        assert_eq!(gap_check(id(3), &s(10, 4, Some(5))), Some(id(10)));
        assert_eq!(gap_check(id(4), &s(10, 4, Some(5))), None);
        // Position before the first entry of an untrimmed stream: the store started again.
        assert_eq!(gap_check(id(3), &s(10, 0, Some(5))), Some(id(10)));
        // Missing stream.
        let missing = StreamState {
            exists: false,
            last_generated: EventId::ZERO,
            max_deleted: EventId::ZERO,
            first_entry: None,
        };
        assert_eq!(gap_check(id(0), &missing), None);
        assert_eq!(gap_check(id(3), &missing), Some(EventId::ZERO));
    }

    #[test]
    fn a_position_whose_entry_is_gone_untrimmed_is_a_gap() {
        let s = |last, deleted| StreamState {
            exists: true,
            last_generated: id(last),
            max_deleted: id(deleted),
            first_entry: Some(id(1)),
        };
        // A failover lost entry 7 and new events were written since (last 10): only the probe tells.
        assert_eq!(gap_check(id(7), &s(10, 0)), None);
        assert!(needs_probe(id(7), &s(10, 0)));
        assert!(entry_lost(id(7), &s(10, 0), false));
        assert!(!entry_lost(id(7), &s(10, 0), true));
        // Trimmed up to the position itself: nothing after it is gone, no probe.
        assert!(!needs_probe(id(7), &s(10, 7)));
        assert!(!entry_lost(id(7), &s(10, 7), false));
        // 0-0 and positions the plain rule already refuses need no probe.
        assert!(!needs_probe(EventId::ZERO, &s(10, 0)));
        assert!(!needs_probe(id(11), &s(10, 0)));
        assert!(!entry_lost(id(11), &s(10, 0), false));
    }
}
