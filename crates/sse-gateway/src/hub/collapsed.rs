//! Latest-wins: for a lagging client of a state channel, the newest event per entity instead
//! of a cut.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use event_bus::Channel;

use super::event::HubEvent;

/// Latest-wins overflow of one connection: state-like events that did not fit its queue, one
/// per (channel, entity), oldest superseded. Shared by the hub (writer) and the stream (reader).
#[derive(Debug, Default)]
pub struct Collapsed {
    /// Set while anything is put aside: the fan-out's lock-free fast path for the usual case.
    active: AtomicBool,
    latest: Mutex<HashMap<(Channel, String), Arc<HubEvent>>>,
}

impl Collapsed {
    /// Takes everything put aside, oldest first.
    pub fn take(&self) -> Vec<Arc<HubEvent>> {
        if !self.is_active() {
            return Vec::new();
        }
        let mut latest = self.latest.lock().unwrap();
        self.active.store(false, Relaxed);
        let mut v: Vec<_> = latest.drain().map(|(_, e)| e).collect();
        drop(latest);
        v.sort_by_key(|e| e.env.id);
        v
    }

    /// Whether anything is put aside (one atomic load: a stream asks after every batch).
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    pub(crate) fn holds_channel(&self, channel: &Channel) -> bool {
        self.is_active() && self.latest.lock().unwrap().keys().any(|(c, _)| c == channel)
    }

    /// Puts an event aside; false if the map is already at `max` entities. The caller wakes the
    /// stream (`Signals::COLLAPSED`).
    pub(crate) fn put(&self, ev: Arc<HubEvent>, max: usize) -> bool {
        let mut latest = self.latest.lock().unwrap();
        let key = (ev.env.channel.clone(), ev.env.payload.id.clone());
        if latest.len() >= max && !latest.contains_key(&key) {
            return false;
        }
        latest.insert(key, ev);
        self.active.store(true, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Action, Envelope, EventId, EventType, Payload, Timestamp};
    use proptest::prelude::*;

    fn ev(channel: &Channel, entity: usize, n: u64) -> Arc<HubEvent> {
        let env = Arc::new(Envelope {
            id: EventId::new(n, 0),
            event_type: EventType::INVENTORY_CHANGE,
            channel: channel.clone(),
            payload: Payload::new(format!("p{entity}"), Action::Updated),
            timestamp: Timestamp::now(),
            traceparent: None,
        });
        Arc::new(HubEvent::new(env, &crate::telemetry::metrics::Metrics::new("t")))
    }

    proptest! {
        /// For any puts (channel, entity) with `max` entities, and takes between them: each take
        /// holds exactly the newest accepted event of every entity put since the last take,
        /// oldest first; a put is refused only for a new entity when `max` are held.
        #[test]
        fn the_latest_per_entity_and_nothing_else(
            ops in proptest::collection::vec(prop_oneof![
                6 => (0..2usize, 0..6usize).prop_map(Some),
                1 => Just(None),
            ], 1..150),
            max in 1..5usize,
        ) {
            let channels = [Channel::INVENTORY, Channel::PRICING];
            let c = Collapsed::default();
            let mut model: HashMap<(usize, usize), u64> = HashMap::new();
            let mut n = 0;
            let take_and_compare = |model: &mut HashMap<(usize, usize), u64>| {
                let got: Vec<u64> = c.take().iter().map(|e| e.env.id.ms).collect();
                let mut want: Vec<u64> = model.drain().map(|(_, id)| id).collect();
                want.sort();
                prop_assert_eq!(got, want);
                Ok(())
            };
            for op in ops {
                match op {
                    Some((ch, entity)) => {
                        n += 1;
                        let known = model.contains_key(&(ch, entity));
                        let accepted = c.put(ev(&channels[ch], entity, n), max);
                        prop_assert_eq!(accepted, known || model.len() < max);
                        if accepted {
                            model.insert((ch, entity), n);
                        }
                        prop_assert_eq!(c.holds_channel(&channels[ch]), model.keys().any(|(k, _)| *k == ch));
                    }
                    None => take_and_compare(&mut model)?,
                }
            }
            take_and_compare(&mut model)?;
            prop_assert!(c.take().is_empty());
        }
    }
}
