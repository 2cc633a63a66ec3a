//! The memory backend's streams: one bounded ring per stream of a configured channel (its
//! partitions, if it has them), and per user's partition one made on first use, at most [`MAX_PARTITIONS`] of them (past that, the one written longest ago
//! goes, and a reader there gets a RESYNC, as from an expired partition on Redis).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    config::BusConfig,
    envelope::{EventId, SharedEnvelope, Timestamp},
    error::BusError,
    name::Channel,
    rules::StreamState,
};

/// Partition rings kept at most.
pub(super) const MAX_PARTITIONS: usize = 65_536;

#[derive(Debug, Default)]
pub(super) struct Ring {
    pub(super) entries: VecDeque<SharedEnvelope>,
    pub(super) last_generated: EventId,
    pub(super) max_deleted: EventId,
}

impl Ring {
    pub(super) fn state(&self) -> StreamState {
        StreamState {
            exists: self.last_generated != EventId::ZERO,
            last_generated: self.last_generated,
            max_deleted: self.max_deleted,
            first_entry: self.entries.front().map(|e| e.id),
        }
    }

    pub(super) fn next_id(&self) -> EventId {
        let now = Timestamp::now_ms();
        if now > self.last_generated.ms {
            EventId::new(now, 0)
        } else {
            EventId::new(self.last_generated.ms, self.last_generated.seq + 1)
        }
    }

    pub(super) fn trim(&mut self, max_len: usize, max_age: Option<Duration>) {
        let min_ms = max_age.map(|age| self.last_generated.ms.saturating_sub(age.as_millis() as u64));
        while let Some(front) = self.entries.front() {
            let too_many = self.entries.len() > max_len;
            let too_old = min_ms.is_some_and(|min| front.id.ms < min);
            if !(too_many || too_old) {
                break;
            }
            self.max_deleted = front.id;
            self.entries.pop_front();
        }
    }

    pub(super) fn after(&self, pos: EventId, limit: usize) -> Vec<SharedEnvelope> {
        let start = self.entries.partition_point(|e| e.id <= pos);
        self.entries.range(start..).take(limit).cloned().collect()
    }
}

/// Every ring: the configured channels' from the start, partitions' made on first use.
#[derive(Debug)]
pub(super) struct Streams {
    channels: HashMap<Channel, Arc<Mutex<Ring>>>,
    partitions: Mutex<HashMap<Channel, Arc<Mutex<Ring>>>>,
}

impl Streams {
    pub(super) fn new(channels: Vec<Channel>) -> Self {
        Streams {
            channels: channels.into_iter().map(|c| (c, Arc::default())).collect(),
            partitions: Mutex::default(),
        }
    }

    /// The ring of a configured channel or of a partition of one.
    pub(super) fn get(&self, config: &BusConfig, channel: &Channel) -> Result<Arc<Mutex<Ring>>, BusError> {
        if let Some(r) = self.channels.get(channel) {
            return Ok(r.clone());
        }
        // A channel with partitions is no stream of its own; a user's partition is made here.
        if !channel.is_partition() || config.spec(channel).is_none() {
            return Err(BusError::UnknownChannel(channel.clone()));
        }
        let mut parts = self.partitions.lock().unwrap();
        if let Some(r) = parts.get(channel) {
            return Ok(r.clone());
        }
        if parts.len() >= MAX_PARTITIONS {
            let oldest = parts
                .iter()
                .min_by_key(|(_, r)| r.lock().unwrap().last_generated)
                .map(|(c, _)| c.clone());
            if let Some(c) = oldest {
                parts.remove(&c);
            }
        }
        Ok(parts.entry(channel.clone()).or_default().clone())
    }

    /// Partition rings held.
    #[cfg(test)]
    pub(super) fn partitions(&self) -> usize {
        self.partitions.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_made_on_use_and_bounded() {
        let config = BusConfig::default();
        let s = Streams::new(config.channel_names());
        let orders = Channel::ORDERS;
        let first = orders.partition("k0").unwrap();
        s.get(&config, &first).unwrap().lock().unwrap().last_generated = EventId::new(1, 0);
        for i in 1..=MAX_PARTITIONS {
            let p = orders.partition(&format!("k{i}")).unwrap();
            s.get(&config, &p).unwrap().lock().unwrap().last_generated = EventId::new(2 + i as u64, 0);
        }
        assert_eq!(s.partitions(), MAX_PARTITIONS, "bounded");
        // The one written longest ago went: it is empty again.
        assert_eq!(
            s.get(&config, &first).unwrap().lock().unwrap().last_generated,
            EventId::ZERO
        );
        let unknown = Channel::new("nope#1").unwrap();
        assert!(matches!(s.get(&config, &unknown), Err(BusError::UnknownChannel(_))));
    }
}
