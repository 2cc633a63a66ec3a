//! Grouping bursts (`docs/reference.md`, "Grouping"; `SSE_DEBOUNCE_WINDOW`): an isolated event goes out at once;
//! further events of the same channel and type within the window of the last one sent are held
//! and go out as one message with their count and payloads. A group is flushed when the window
//! ends, when it reaches its size cap, or when an event of another type arrives on the same
//! channel, so events of a channel always leave in order and the cursor never passes an event
//! that was not sent. Pure logic: the caller passes the time.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use event_bus::{Channel, EventType};

use crate::hub::event::HubEvent;

/// Held events of one channel and type.
#[derive(Debug)]
pub struct Group {
    /// The events, oldest first.
    pub events: Vec<Arc<HubEvent>>,
    due: Instant,
}

/// What to write next.
#[derive(Debug)]
pub enum Out {
    /// One event, as its envelope.
    Single(Arc<HubEvent>),
    /// Two or more events of one channel and type, as one message.
    Group(Vec<Arc<HubEvent>>),
}

/// One connection's grouping state.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    max_group: usize,
    last_sent: HashMap<(Channel, EventType), Instant>,
    groups: Vec<((Channel, EventType), Group)>,
}

impl Coalescer {
    /// `window` zero sends every event on its own.
    pub fn new(window: Duration, max_group: usize) -> Self {
        Coalescer {
            window,
            max_group: max_group.max(2),
            last_sent: HashMap::new(),
            groups: Vec::new(),
        }
    }

    /// Whether every event goes out alone, at once (no window).
    pub fn sends_each(&self) -> bool {
        self.window.is_zero()
    }

    /// Takes one event; appends to `out` what can be written now.
    pub fn offer(&mut self, ev: Arc<HubEvent>, now: Instant, out: &mut Vec<Out>) {
        if self.window.is_zero() {
            out.push(Out::Single(ev));
            return;
        }
        let key = (ev.env.channel.clone(), ev.env.event_type.clone());
        // Another type held on this channel leaves first: per-channel order.
        self.flush_where(now, out, |(c, t)| *c == key.0 && *t != key.1);
        if let Some(i) = self.groups.iter().position(|(k, _)| *k == key) {
            let group = &mut self.groups[i].1;
            group.events.push(ev);
            if group.events.len() >= self.max_group {
                let (key, group) = self.groups.remove(i);
                self.emit(key, group, now, out);
            }
            return;
        }
        match self.last_sent.get(&key) {
            Some(last) if now.duration_since(*last) < self.window => {
                let due = *last + self.window;
                self.groups.push((key, Group { events: vec![ev], due }));
            }
            _ => {
                self.last_sent.insert(key, now);
                out.push(Out::Single(ev));
            }
        }
        if self.last_sent.len() > 1024 {
            let window = self.window;
            self.last_sent.retain(|_, at| now.duration_since(*at) < window);
        }
    }

    /// When the earliest held group is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.groups.iter().map(|(_, g)| g.due).min()
    }

    /// Writes the groups whose window has ended.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<Out>) {
        let due: Vec<_> = self
            .groups
            .iter()
            .filter(|(_, g)| g.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        self.flush_where(now, out, |k| due.contains(k));
    }

    /// Writes every held group of `channel` (before a resync of it).
    pub fn flush_channel(&mut self, channel: &Channel, now: Instant, out: &mut Vec<Out>) {
        self.flush_where(now, out, |(c, _)| c == channel);
    }

    /// Writes everything held (the stream is closing).
    pub fn flush_all(&mut self, now: Instant, out: &mut Vec<Out>) {
        self.flush_where(now, out, |_| true);
    }

    fn flush_where(&mut self, now: Instant, out: &mut Vec<Out>, pick: impl Fn(&(Channel, EventType)) -> bool) {
        let mut i = 0;
        while i < self.groups.len() {
            if pick(&self.groups[i].0) {
                let (key, group) = self.groups.remove(i);
                self.emit(key, group, now, out);
            } else {
                i += 1;
            }
        }
    }

    fn emit(&mut self, key: (Channel, EventType), mut group: Group, now: Instant, out: &mut Vec<Out>) {
        self.last_sent.insert(key, now);
        if group.events.len() == 1 {
            out.push(Out::Single(group.events.pop().expect("one event")));
        } else {
            out.push(Out::Group(group.events));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Action, Envelope, EventId, Payload, Timestamp};

    fn ev(channel: Channel, ty: EventType, n: u64) -> Arc<HubEvent> {
        let env = Arc::new(Envelope {
            id: EventId::new(n, 0),
            event_type: ty,
            channel,
            payload: Payload::new(n.to_string(), Action::Updated),
            timestamp: Timestamp::now(),
            traceparent: None,
        });
        Arc::new(HubEvent::new(env, &crate::telemetry::metrics::Metrics::new("t")))
    }

    fn sizes(out: &[Out]) -> Vec<usize> {
        out.iter()
            .map(|o| match o {
                Out::Single(_) => 1,
                Out::Group(g) => g.len(),
            })
            .collect()
    }

    const W: Duration = Duration::from_millis(500);

    #[test]
    fn an_isolated_event_goes_out_at_once() {
        let mut c = Coalescer::new(W, 100);
        let t0 = Instant::now();
        let mut out = Vec::new();
        c.offer(ev(Channel::ORDERS, EventType::ORDER_RECEIVED, 1), t0, &mut out);
        assert_eq!(sizes(&out), [1]);
        // Another one after the window: also at once.
        c.offer(ev(Channel::ORDERS, EventType::ORDER_RECEIVED, 2), t0 + W, &mut out);
        assert_eq!(sizes(&out), [1, 1]);
        assert_eq!(c.next_due(), None);
    }

    #[test]
    fn a_burst_is_held_until_the_window_ends_then_sent_as_one() {
        let mut c = Coalescer::new(W, 1000);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for n in 0..100 {
            c.offer(
                ev(Channel::PRICING, EventType::PRICE_CHANGE, n),
                t0 + Duration::from_millis(n),
                &mut out,
            );
        }
        assert_eq!(sizes(&out), [1], "only the first went out");
        assert_eq!(c.next_due(), Some(t0 + W));
        c.flush_due(t0 + W - Duration::from_millis(1), &mut out);
        assert_eq!(out.len(), 1, "not before the window ends");
        c.flush_due(t0 + W, &mut out);
        assert_eq!(sizes(&out), [1, 99]);
    }

    #[test]
    fn groups_are_capped_and_counts_add_up() {
        let mut c = Coalescer::new(W, 500);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for n in 0..10_000 {
            c.offer(ev(Channel::PRICING, EventType::PRICE_CHANGE, n), t0, &mut out);
        }
        c.flush_all(t0, &mut out);
        assert!(out.len() <= 25, "{} messages", out.len());
        assert_eq!(sizes(&out).iter().sum::<usize>(), 10_000);
    }

    #[test]
    fn another_type_on_the_same_channel_flushes_first_to_keep_order() {
        let mut c = Coalescer::new(W, 100);
        let t0 = Instant::now();
        let (created, done) = (
            EventType::new("task_created").unwrap(),
            EventType::new("task_done").unwrap(),
        );
        let tasks = Channel::new("tasks").unwrap();
        let mut out = Vec::new();
        for n in 1..=3 {
            c.offer(ev(tasks.clone(), created.clone(), n), t0, &mut out);
        }
        c.offer(ev(tasks.clone(), done, 4), t0, &mut out);
        let ids: Vec<Vec<u64>> = out
            .iter()
            .map(|o| match o {
                Out::Single(e) => vec![e.env.id.ms],
                Out::Group(g) => g.iter().map(|e| e.env.id.ms).collect(),
            })
            .collect();
        assert_eq!(ids, [vec![1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn window_zero_never_holds() {
        let mut c = Coalescer::new(Duration::ZERO, 100);
        let mut out = Vec::new();
        for n in 0..10 {
            c.offer(
                ev(Channel::ORDERS, EventType::ORDER_RECEIVED, n),
                Instant::now(),
                &mut out,
            );
        }
        assert_eq!(sizes(&out), [1; 10]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Offer an event of (channel, type) `dt` ms after the previous step, or let `dt` ms
        /// pass and flush what is due.
        #[derive(Clone, Debug)]
        enum Step {
            Offer { channel: usize, ty: usize, dt: u64 },
            Tick { dt: u64 },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0..2usize, 0..2usize, 0..700u64).prop_map(|(channel, ty, dt)| Step::Offer { channel, ty, dt }),
                1 => (0..1200u64).prop_map(|dt| Step::Tick { dt }),
            ]
        }

        proptest! {
            /// For any sequence of events and times: every event leaves exactly once, each
            /// channel's in the order offered, groups hold one channel and type and at most
            /// `max_group`, and what has left of a channel is always a prefix of what was
            /// offered on it, so the cursor (the last id written) never passes a held event.
            #[test]
            fn nothing_lost_repeated_or_reordered_and_the_cursor_never_passes_a_held_event(
                steps in proptest::collection::vec(step(), 1..200),
                window_ms in 0..600u64,
                max_group in 2..6usize,
            ) {
                let channels = [Channel::PRICING, Channel::new("tasks").unwrap()];
                let types = [EventType::PRICE_CHANGE, EventType::new("task_done").unwrap()];
                let mut c = Coalescer::new(Duration::from_millis(window_ms), max_group);
                let mut now = Instant::now();
                let mut out = Vec::new();
                let (mut offered, mut written): (Vec<Vec<u64>>, Vec<Vec<u64>>) = (vec![vec![]; 2], vec![vec![]; 2]);
                let mut n = 0;
                let check = |out: &mut Vec<Out>, offered: &Vec<Vec<u64>>, written: &mut Vec<Vec<u64>>| {
                    for o in out.drain(..) {
                        let events = match o {
                            Out::Single(e) => vec![e],
                            Out::Group(g) => {
                                prop_assert!(g.len() >= 2 && g.len() <= max_group, "group of {}", g.len());
                                g
                            }
                        };
                        let (ch, ty) = (&events[0].env.channel, &events[0].env.event_type);
                        prop_assert!(events.iter().all(|e| &e.env.channel == ch && &e.env.event_type == ty));
                        let i = channels.iter().position(|c| c == ch).unwrap();
                        written[i].extend(events.iter().map(|e| e.env.id.ms));
                    }
                    for i in 0..2 {
                        prop_assert_eq!(&written[i][..], &offered[i][..written[i].len()], "not a prefix");
                    }
                    Ok(())
                };
                for s in steps {
                    match s {
                        Step::Offer { channel, ty, dt } => {
                            now += Duration::from_millis(dt);
                            n += 1;
                            offered[channel].push(n);
                            c.offer(ev(channels[channel].clone(), types[ty].clone(), n), now, &mut out);
                        }
                        Step::Tick { dt } => {
                            now += Duration::from_millis(dt);
                            c.flush_due(now, &mut out);
                        }
                    }
                    check(&mut out, &offered, &mut written)?;
                    if let Some(due) = c.next_due() {
                        // A held group is due within one window of now.
                        prop_assert!(due <= now + Duration::from_millis(window_ms));
                    }
                }
                c.flush_all(now, &mut out);
                check(&mut out, &offered, &mut written)?;
                prop_assert_eq!(written, offered);
                prop_assert_eq!(c.next_due(), None);
            }
        }
    }
}
