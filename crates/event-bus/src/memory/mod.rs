//! The in-process backend: one bounded ring buffer per channel.
//!
//! For a single process (`make run`, tests). Ids are generated as Redis does, so cursors look
//! and behave the same; a cursor from before a restart is reported as a gap ([`Delivery::Resync`]),
//! since the ring did not survive it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod follow;
mod ring;

use ring::{Ring, Streams};

use crate::{
    bus::{Broker, EntityState, Figures, Presence, Replay},
    config::BusConfig,
    cursor::Cursor,
    envelope::{Envelope, EventId, NewEvent, SharedEnvelope},
    error::BusError,
    name::Channel,
    publish::{Guard, Guarded, Published},
    rules::{
        check_channels, check_entity, check_event, check_stream, gap_check, placed, resync_page, resynced, starts,
    },
    stats::BusStats,
    subscription::{Health, HealthTracker, Subscription},
};

/// The in-process bus. Cheap to clone; clones share the same channels.
#[derive(Clone, Debug)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BusConfig,
    rings: Streams,
    /// Bumped after every publish; subscribers wait on it.
    tick: watch::Sender<u64>,
    dedupe: Mutex<HashMap<(Channel, String), (EventId, Instant)>>,
    /// Entity states of guarded publishes: (channel, entity) -> (state, expiry).
    states: Mutex<HashMap<(Channel, String), StateEntry>>,
    /// Announced instances: (kind, instance) -> (figures, expiry).
    roster: Mutex<HashMap<(String, String), (Figures, Instant)>>,
    stats: BusStats,
}

/// An entity's state and when it expires.
type StateEntry = (String, Option<Instant>);

impl MemoryBus {
    /// The configuration this bus was opened with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// A new, empty bus for the configured channels.
    pub fn new(config: BusConfig) -> Result<Self, BusError> {
        config.validate()?;
        let rings = Streams::new(config.stream_names());
        Ok(MemoryBus {
            inner: Arc::new(Inner {
                config,
                rings,
                tick: watch::channel(0).0,
                dedupe: Mutex::new(HashMap::new()),
                states: Mutex::new(HashMap::new()),
                roster: Mutex::new(HashMap::new()),
                stats: BusStats::default(),
            }),
        })
    }

    fn ring(&self, channel: &Channel) -> Result<Arc<Mutex<Ring>>, BusError> {
        self.inner.rings.get(&self.inner.config, channel)
    }

    fn store(&self, channel: &Channel, event: NewEvent) -> Result<Published, BusError> {
        let cfg = &self.inner.config;
        let window = Duration::from_secs(cfg.dedupe_window_secs);
        let mut dedupe = self.inner.dedupe.lock().unwrap();
        let key = event.idempotency_key.clone().map(|k| (channel.clone(), k));
        if let Some(key) = &key {
            if let Some((id, at)) = dedupe.get(key) {
                if at.elapsed() < window {
                    self.inner.stats.duplicate();
                    return Ok(Published {
                        id: *id,
                        duplicate: true,
                    });
                }
            }
        }
        let ring = self.ring(channel)?;
        let mut ring = ring.lock().unwrap();
        let id = ring.next_id();
        ring.last_generated = id;
        ring.entries.push_back(Arc::new(Envelope {
            id,
            event_type: event.event_type,
            channel: channel.clone(),
            payload: event.payload,
            timestamp: event.timestamp,
            traceparent: event.traceparent,
        }));
        let max_len = match cfg.retention.max_len {
            0 => cfg.memory_capacity,
            n => cfg.memory_capacity.min(n as usize),
        };
        let max_age = (cfg.retention.max_age_secs > 0).then(|| Duration::from_secs(cfg.retention.max_age_secs));
        ring.trim(max_len, max_age);
        drop(ring);
        if let Some(key) = key {
            if dedupe.len() >= 100_000 {
                dedupe.retain(|_, (_, at)| at.elapsed() < window);
            }
            dedupe.insert(key, (id, Instant::now()));
        }
        self.inner.stats.published(1);
        Ok(Published { id, duplicate: false })
    }
}

impl MemoryBus {
    /// The guard check and state move, under the states lock; `publish` runs inside it.
    fn guarded(
        &self,
        channel: &Channel,
        guard: Guard,
        publish: impl FnOnce() -> Result<Published, BusError>,
    ) -> Result<Guarded, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        check_entity(&guard.entity)?;
        let mut states = self.inner.states.lock().unwrap();
        let key = (channel.clone(), guard.entity);
        let current = states
            .get(&key)
            .filter(|(_, exp)| exp.is_none_or(|e| e > Instant::now()))
            .map(|(v, _)| v.clone());
        if current != guard.expect {
            return Ok(Guarded::Conflict { current });
        }
        let published = publish()?;
        let expiry = (guard.ttl_secs > 0).then(|| Instant::now() + Duration::from_secs(guard.ttl_secs));
        states.insert(key, (guard.set, expiry));
        Ok(Guarded::Done(published))
    }

    fn dedupe_hit(&self, channel: &Channel, key: &str) -> Option<EventId> {
        let window = Duration::from_secs(self.inner.config.dedupe_window_secs);
        let dedupe = self.inner.dedupe.lock().unwrap();
        dedupe
            .get(&(channel.clone(), key.to_owned()))
            .filter(|(_, at)| at.elapsed() < window)
            .map(|(id, _)| *id)
    }
}

impl Broker for MemoryBus {
    async fn published_with(&self, channel: &Channel, idempotency_key: &str) -> Result<Option<EventId>, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        Ok(self
            .inner
            .config
            .streams_of(channel)
            .iter()
            .find_map(|s| self.dedupe_hit(s, idempotency_key)))
    }

    async fn publish(&self, channel: &Channel, event: NewEvent) -> Result<Published, BusError> {
        Ok(self.publish_batch(vec![(channel.clone(), event)]).await?.remove(0))
    }

    async fn publish_batch(&self, events: Vec<(Channel, NewEvent)>) -> Result<Vec<Published>, BusError> {
        let events = placed(&self.inner.config, events)?;
        let out = events
            .into_iter()
            .map(|(channel, event)| self.store(&channel, event))
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.tick.send_modify(|n| *n = n.wrapping_add(1));
        Ok(out)
    }

    async fn subscribe(&self, channels: &[Channel], from: Option<&Cursor>) -> Result<Subscription, BusError> {
        check_channels(&self.inner.config, channels)?;
        let mut positions = Vec::with_capacity(channels.len());
        let mut resyncs = Vec::new();
        for (s, pos, changed) in starts(&self.inner.config, channels, from) {
            let head = self.ring(&s)?.lock().unwrap().last_generated;
            if changed {
                resyncs.push((s.clone(), head));
            }
            positions.push((s, pos.unwrap_or(head)));
        }
        let (tx, rx) = resynced(&self.inner.config, &self.inner.stats, resyncs);
        let (_health, health_rx) = HealthTracker::new();
        let stop = CancellationToken::new();
        let (follower, changes) = Subscription::changes(self.inner.config.channel_names());
        let limit = self.inner.config.read_batch;
        tokio::spawn(follow::run(self.clone(), positions, limit, tx, changes, stop.clone()));
        Ok(Subscription::new(rx, health_rx, follower, stop))
    }

    async fn replay(&self, channel: &Channel, after: EventId, limit: usize) -> Result<Replay, BusError> {
        check_stream(&self.inner.config, channel)?;
        let ring = self.ring(channel)?;
        let ring = ring.lock().unwrap();
        let state = ring.state();
        if let Some(resume_from) = gap_check(after, &state) {
            let resync = resync_page(after, resume_from, &state, &self.inner.stats);
            return Ok(resync);
        }
        let limit = limit.max(1);
        let events = ring.after(after, limit);
        Ok(Replay {
            last: events.last().map_or(after, |e| e.id),
            at_head: events.len() < limit,
            events,
            ..Replay::default()
        })
    }

    async fn head(&self, channels: &[Channel]) -> Result<Cursor, BusError> {
        check_channels(&self.inner.config, channels)?;
        self.inner
            .config
            .streams(channels)
            .iter()
            .map(|c| Ok((c.clone(), self.ring(c)?.lock().unwrap().last_generated)))
            .collect()
    }

    fn health(&self) -> Health {
        Health::Up
    }

    fn stats(&self) -> &BusStats {
        &self.inner.stats
    }
}

impl Presence for MemoryBus {
    async fn announce(&self, kind: &str, instance: &str, figures: &Figures, ttl: Duration) -> Result<(), BusError> {
        let mut roster = self.inner.roster.lock().unwrap();
        roster.insert(
            (kind.to_owned(), instance.to_owned()),
            (figures.clone(), Instant::now() + ttl),
        );
        Ok(())
    }

    async fn withdraw(&self, kind: &str, instance: &str) -> Result<(), BusError> {
        self.inner
            .roster
            .lock()
            .unwrap()
            .remove(&(kind.to_owned(), instance.to_owned()));
        Ok(())
    }

    async fn roster(&self, kind: &str) -> Result<Vec<(String, Figures)>, BusError> {
        let mut roster = self.inner.roster.lock().unwrap();
        let now = Instant::now();
        roster.retain(|_, (_, until)| *until > now);
        let mut out: Vec<_> = roster
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, i), (f, _))| (i.clone(), f.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl EntityState for MemoryBus {
    async fn publish_guarded(&self, channel: &Channel, event: NewEvent, guard: Guard) -> Result<Guarded, BusError> {
        let channel = &self.inner.config.place(channel, &guard.entity);
        check_event(&self.inner.config, channel, &event)?;
        if let Some(id) = event
            .idempotency_key
            .as_deref()
            .and_then(|k| self.dedupe_hit(channel, k))
        {
            self.inner.stats.duplicate();
            return Ok(Guarded::Done(Published { id, duplicate: true }));
        }
        let out = self.guarded(channel, guard, || self.store(channel, event))?;
        if matches!(out, Guarded::Done(_)) {
            self.inner.tick.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(out)
    }

    async fn set_state(&self, channel: &Channel, guard: Guard) -> Result<Guarded, BusError> {
        let channel = &self.inner.config.place(channel, &guard.entity);
        let head = self.ring(channel)?.lock().unwrap().last_generated;
        self.guarded(channel, guard, || {
            Ok(Published {
                id: head,
                duplicate: false,
            })
        })
    }

    async fn state(&self, channel: &Channel, entity: &str) -> Result<Option<String>, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        check_entity(entity)?;
        let channel = &self.inner.config.place(channel, entity);
        let states = self.inner.states.lock().unwrap();
        Ok(states
            .get(&(channel.clone(), entity.to_owned()))
            .filter(|(_, exp)| exp.is_none_or(|e| e > Instant::now()))
            .map(|(v, _)| v.clone()))
    }
}

impl follow::Rings for MemoryBus {
    fn after(&self, channel: &Channel, pos: EventId, limit: usize) -> Option<(Option<EventId>, Vec<SharedEnvelope>)> {
        let ring = self.ring(channel).ok()?;
        let ring = ring.lock().unwrap();
        Some(match gap_check(pos, &ring.state()) {
            Some(resume_from) => (Some(resume_from), Vec::new()),
            None => (None, ring.after(pos, limit)),
        })
    }
    fn ticks(&self) -> watch::Receiver<u64> {
        self.inner.tick.subscribe()
    }
    fn resynced(&self) {
        self.inner.stats.resync();
    }
    fn delivered(&self, n: u64) {
        self.inner.stats.delivered(n);
    }
}
