//! Digest windows: a route with `digest_window_ms` sends one message for the events it takes
//! within a window instead of one each ("13 price changes (latest: ...)"). Windows are aligned
//! to the events' ids (the store's clock: `[k·W, (k+1)·W)`), so the same events make the same
//! digest however often a channel is read again after a restart: its key is (channel, route,
//! window, destination), and a re-read queues nothing twice. A window closes when the channel
//! has an event past it, or when this process' clock is `GRACE_MS` past its end.

use std::collections::BTreeMap;

use event_bus::{Envelope, EventId, EventType};

/// How long after a window's end, by this process' clock, it closes without a later event
/// (the store's clock, which gives the ids, may be a little behind).
pub const GRACE_MS: u64 = 1_000;

/// One open window of one route: what its message needs, not its events (an hour's window
/// at 1,000 events/s holds the same few fields as one of a second).
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Its start, in ms (a multiple of the width).
    pub start_ms: u64,
    /// Its width, in ms.
    pub width_ms: u64,
    /// The id of its first event (the stored position stays before it).
    pub first: EventId,
    /// How many events it took.
    pub count: usize,
    /// Events per type, in the order the types first came (a handful: one per type).
    pub counts: Vec<(EventType, usize)>,
    /// Its latest event.
    pub last: Envelope,
}

impl Window {
    fn new(start_ms: u64, width_ms: u64, event: &Envelope) -> Window {
        Window {
            start_ms,
            width_ms,
            first: event.id,
            count: 1,
            counts: vec![(event.event_type.clone(), 1)],
            last: event.clone(),
        }
    }

    fn take(&mut self, event: &Envelope) {
        self.count += 1;
        match self.counts.iter_mut().find(|(t, _)| *t == event.event_type) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((event.event_type.clone(), 1)),
        }
        self.last = event.clone();
    }
}

/// A channel's open windows, by route.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    open: BTreeMap<usize, Window>,
}

impl Windows {
    /// Adds route `route`'s event; the window it closes, if the event starts the next one.
    pub fn add(&mut self, route: usize, width_ms: u64, event: &Envelope) -> Option<Window> {
        let start_ms = event.id.ms - event.id.ms % width_ms;
        match self.open.get_mut(&route) {
            Some(w) if w.start_ms == start_ms => {
                w.take(event);
                None
            }
            _ => self.open.insert(route, Window::new(start_ms, width_ms, event)),
        }
    }

    /// Closes the windows whose end is `GRACE_MS` behind `now_ms`, or behind `seen` (the
    /// channel's newest id read): with their routes.
    pub fn due(&mut self, now_ms: u64, seen: EventId) -> Vec<(usize, Window)> {
        let ended = |w: &Window| {
            let end = w.start_ms + w.width_ms;
            now_ms >= end + GRACE_MS || seen.ms >= end
        };
        let routes: Vec<usize> = self.open.iter().filter(|(_, w)| ended(w)).map(|(r, _)| *r).collect();
        routes
            .into_iter()
            .filter_map(|r| self.open.remove(&r).map(|w| (r, w)))
            .collect()
    }

    /// The first event of the oldest open window: the stored position must stay before it,
    /// so a restart reads the window whole again.
    pub fn first(&self) -> Option<EventId> {
        self.open.values().map(|w| w.first).min()
    }

    /// Forgets every window (the lease was lost: the holder reads them again).
    pub fn clear(&mut self) {
        self.open.clear();
    }
}

/// The id just before `id`: a position from which `id` is read again.
pub fn just_before(id: EventId) -> EventId {
    match (id.ms, id.seq) {
        (0, 0) => EventId::ZERO,
        (ms, 0) => EventId::new(ms - 1, u64::MAX),
        (ms, seq) => EventId::new(ms, seq - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Action, Channel, EventType, Payload, Timestamp};

    fn at(ms: u64, seq: u64) -> Envelope {
        Envelope {
            id: EventId::new(ms, seq),
            event_type: EventType::PRICE_CHANGE,
            channel: Channel::PRICING,
            payload: Payload::new(format!("lst_{ms}_{seq}"), Action::Updated),
            timestamp: Timestamp::now(),
            traceparent: None,
        }
    }

    #[test]
    fn windows_are_aligned_to_ids_and_close_on_a_later_event_or_the_clock() {
        let mut w = Windows::default();
        assert_eq!(w.add(0, 1000, &at(10_100, 0)), None);
        assert_eq!(w.add(0, 1000, &at(10_999, 3)), None);
        assert_eq!(w.first(), Some(EventId::new(10_100, 0)));
        let closed = w
            .add(0, 1000, &at(11_000, 0))
            .expect("the next window closes the first");
        assert_eq!((closed.start_ms, closed.count), (10_000, 2));
        assert_eq!(
            (closed.first, closed.last.id),
            (EventId::new(10_100, 0), EventId::new(10_999, 3))
        );
        assert!(w.due(11_999 + GRACE_MS, EventId::new(11_000, 0)).is_empty(), "not yet");
        let due = w.due(12_000 + GRACE_MS, EventId::new(11_000, 0));
        assert_eq!(due.len(), 1);
        assert_eq!(w.first(), None);
        w.add(1, 500, &at(20_000, 0));
        assert_eq!(
            w.due(0, EventId::new(20_500, 0)).len(),
            1,
            "a later id closes it whatever the clock"
        );
    }

    #[test]
    fn a_window_keeps_counts_not_events() {
        let mut w = Windows::default();
        for i in 0..100_000u64 {
            let mut e = at(50_000, i);
            if i % 10 == 0 {
                e.event_type = EventType::ORDER_RECEIVED;
            }
            assert_eq!(w.add(0, 1000, &e), None);
        }
        let closed = w.add(0, 1000, &at(51_000, 0)).unwrap();
        assert_eq!(closed.count, 100_000);
        assert_eq!(
            closed.counts,
            vec![(EventType::ORDER_RECEIVED, 10_000), (EventType::PRICE_CHANGE, 90_000)]
        );
        assert_eq!(closed.last.id, EventId::new(50_000, 99_999));
    }

    #[test]
    fn just_before_reads_the_id_again() {
        assert_eq!(just_before(EventId::new(5, 2)), EventId::new(5, 1));
        assert_eq!(just_before(EventId::new(5, 0)), EventId::new(4, u64::MAX));
        assert_eq!(just_before(EventId::ZERO), EventId::ZERO);
    }
}
