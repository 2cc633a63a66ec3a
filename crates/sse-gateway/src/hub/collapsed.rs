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
    /// Wakes the stream when something was put aside.
    pub notify: tokio::sync::Notify,
}

impl Collapsed {
    /// Takes everything put aside, oldest first.
    pub fn take(&self) -> Vec<Arc<HubEvent>> {
        if !self.active.load(Relaxed) {
            return Vec::new();
        }
        let mut latest = self.latest.lock().unwrap();
        self.active.store(false, Relaxed);
        let mut v: Vec<_> = latest.drain().map(|(_, e)| e).collect();
        drop(latest);
        v.sort_by_key(|e| e.env.id);
        v
    }

    pub(crate) fn holds_channel(&self, channel: &Channel) -> bool {
        self.active.load(Relaxed) && self.latest.lock().unwrap().keys().any(|(c, _)| c == channel)
    }

    /// Puts an event aside; false if the map is already at `max` entities.
    pub(crate) fn put(&self, ev: Arc<HubEvent>, max: usize) -> bool {
        let mut latest = self.latest.lock().unwrap();
        let key = (ev.env.channel.clone(), ev.env.payload.id.clone());
        if latest.len() >= max && !latest.contains_key(&key) {
            return false;
        }
        latest.insert(key, ev);
        self.active.store(true, Relaxed);
        drop(latest);
        self.notify.notify_one();
        true
    }
}
