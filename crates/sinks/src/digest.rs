//! Digest windows: a route with `digest_window_ms` sends one message for the events it takes
//! within a window instead of one each ("13 price changes (latest: ...)"). Windows are aligned
//! to the events' ids (the store's clock: `[k·W, (k+1)·W)`), so the same events make the same
//! digest however often a channel is read again after a restart: its key is (channel, route,
//! window, destination), and a re-read queues nothing twice. A window closes when the channel
//! has an event past it, or when this process' clock is `GRACE_MS` past its end.

use std::collections::BTreeMap;

use event_bus::{Envelope, EventId};

/// How long after a window's end, by this process' clock, it closes without a later event
/// (the store's clock, which gives the ids, may be a little behind).
pub const GRACE_MS: u64 = 1_000;

/// One open window of one route.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Its start, in ms (a multiple of the width).
    pub start_ms: u64,
    /// Its width, in ms.
    pub width_ms: u64,
    /// The events, in order.
    pub events: Vec<Envelope>,
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
                w.events.push(event.clone());
                None
            }
            _ => self.open.insert(
                route,
                Window {
                    start_ms,
                    width_ms,
                    events: vec![event.clone()],
                },
            ),
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
        self.open.values().filter_map(|w| w.events.first().map(|e| e.id)).min()
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
        assert_eq!((closed.start_ms, closed.events.len()), (10_000, 2));
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
    fn just_before_reads_the_id_again() {
        assert_eq!(just_before(EventId::new(5, 2)), EventId::new(5, 1));
        assert_eq!(just_before(EventId::new(5, 0)), EventId::new(4, u64::MAX));
        assert_eq!(just_before(EventId::ZERO), EventId::ZERO);
    }
}
