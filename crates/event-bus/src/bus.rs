//! The broker interface both backends implement, and what a subscription yields.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::SystemTime,
};

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    channel::Channel,
    config::BusConfig,
    cursor::Cursor,
    envelope::{EventId, NewEvent, SharedEnvelope},
    error::BusError,
    guard::{Guard, Guarded},
    memory::MemoryBus,
    redis::RedisBus,
    stats::{BusStats, MalformedKind},
};

/// The result of a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The stored event's id (for a duplicate: the id of the first publish with that key).
    pub id: EventId,
    /// The idempotency key was seen inside the window: nothing was stored or announced.
    pub duplicate: bool,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// The next event of a channel.
    Event(SharedEnvelope),
    /// Events of `channel` after the subscriber's position are gone (older than retention, or
    /// the store lost them), so the subscriber must reload its state. Delivery goes on after
    /// `resume_from`, which becomes the subscriber's position in that channel.
    Resync {
        /// The channel with the gap.
        channel: Channel,
        /// Where delivery continues.
        resume_from: EventId,
    },
}

impl Delivery {
    /// Moves `cursor` past this delivery.
    pub fn advance(&self, cursor: &mut Cursor) {
        match self {
            Delivery::Event(e) => cursor.advance(&e.channel, e.id),
            Delivery::Resync { channel, resume_from } => cursor.set(channel.clone(), *resume_from),
        }
    }
}

/// A service instance's live figures: field name to value.
pub type Figures = std::collections::BTreeMap<String, String>;

/// A page of stored events, from [`Bus::replay`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replay {
    /// The events, oldest first.
    pub events: Vec<SharedEnvelope>,
    /// Events after the requested position are gone; continue from this id after a reload.
    pub resync: Option<EventId>,
    /// With `resync`: the oldest entry still stored, for a consumer that must count what is
    /// left rather than reload (the stats-aggregator).
    pub oldest: Option<EventId>,
    /// Malformed entries the page skipped (each already counted in [`Bus::stats`]), by id:
    /// for consumers that account for every stored entry, like the stats-aggregator.
    pub malformed: Vec<(EventId, crate::stats::MalformedKind)>,
    /// The id of the last entry this page examined, malformed ones included: where the next
    /// page starts. The requested position when the page is empty.
    pub last: EventId,
    /// The page reached the head: fewer than `limit` entries were stored after the position.
    /// (Not the same as `events.len() < limit`: malformed entries are skipped.)
    pub at_head: bool,
}

/// Whether a connection to the backplane is working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Working.
    Up,
    /// Not working since `since`, because of `reason`; the bus keeps retrying.
    Down {
        /// When it went down.
        since: SystemTime,
        /// The last error.
        reason: String,
    },
}

impl Health {
    /// Whether it is up.
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up)
    }
}

/// The broker: stores events durably (within retention) and delivers them in order.
///
/// Guarantees, for both backends:
/// - events of one channel are delivered in publish order, each once per subscription;
/// - a subscription from a cursor yields every stored event after it, then live events, with no
///   gap and no duplicate where the two meet;
/// - a gap (events trimmed by retention, or lost by the store) is reported as
///   [`Delivery::Resync`], never silent;
/// - a subscription survives backplane outages: it reconnects and continues from where it was,
///   and reports its [`Health`] meanwhile.
pub trait Bus: Send + Sync + 'static {
    /// Stores `event` on `channel` and announces it, atomically.
    fn publish(&self, channel: &Channel, event: NewEvent) -> impl Future<Output = Result<Published, BusError>> + Send;

    /// Publishes many events at once (pipelined); the results are in input order. Either every
    /// event is checked before anything is stored, or an error is returned and nothing is.
    fn publish_batch(
        &self,
        events: Vec<(Channel, NewEvent)>,
    ) -> impl Future<Output = Result<Vec<Published>, BusError>> + Send;

    /// Follows `channels`: with `from`, every stored event after the cursor's position in each
    /// channel first (a channel missing from the cursor starts at its head); without, only
    /// events stored after this call returns.
    fn subscribe(
        &self,
        channels: &[Channel],
        from: Option<&Cursor>,
    ) -> impl Future<Output = Result<Subscription, BusError>> + Send;

    /// Stored events of `channel` after `after`, oldest first, from at most `limit` entries
    /// (call again from [`Replay::last`] until [`Replay::at_head`]). If events after
    /// `after` are gone, no events and `resync` says where delivery continues. For catching up
    /// one client without a subscription of its own.
    fn replay(
        &self,
        channel: &Channel,
        after: EventId,
        limit: usize,
    ) -> impl Future<Output = Result<Replay, BusError>> + Send;

    /// Publishes `event` on `channel` only if `guard.entity`'s state is `guard.expect`, and
    /// moves the state to `guard.set` in the same atomic step (see [`Guard`]). A repeated
    /// idempotency key answers the first publish's id whatever the state (a retried job).
    fn publish_guarded(
        &self,
        channel: &Channel,
        event: NewEvent,
        guard: Guard,
    ) -> impl Future<Output = Result<Guarded, BusError>> + Send;

    /// Moves an entity's state like [`Bus::publish_guarded`] without publishing anything (a
    /// first observation that is a baseline, not a change). Answers `Done` with the
    /// channel's current head id, or `Conflict`.
    fn set_state(&self, channel: &Channel, guard: Guard) -> impl Future<Output = Result<Guarded, BusError>> + Send;

    /// An entity's state, as the last guarded publish or [`Bus::set_state`] left it.
    fn state(&self, channel: &Channel, entity: &str) -> impl Future<Output = Result<Option<String>, BusError>> + Send;

    /// The id of the event published with `idempotency_key` on `channel` inside the dedupe
    /// window, if there was one (to answer a retried job with what its first run emitted).
    fn published_with(
        &self,
        channel: &Channel,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Option<EventId>, BusError>> + Send;

    /// The current head of each channel: a cursor a page can take together with its initial
    /// data load, then subscribe from, missing nothing in between.
    fn head(&self, channels: &[Channel]) -> impl Future<Output = Result<Cursor, BusError>> + Send;

    /// Publishes a service instance's live figures under `<prefix><kind>:<instance>` (for the
    /// gateway: `rakuda:realtime:gateway:<instance>`, a hash), kept for `ttl` unless announced
    /// again. The instance is also listed in `<prefix><kind>s` so readers need no key scan.
    fn announce(
        &self,
        kind: &str,
        instance: &str,
        figures: &Figures,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Removes an instance's figures at once (a clean shutdown).
    fn withdraw(&self, kind: &str, instance: &str) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Every instance of `kind` whose figures have not expired, by name.
    fn roster(&self, kind: &str) -> impl Future<Output = Result<Vec<(String, Figures)>, BusError>> + Send;

    /// Whether publishing currently works.
    fn health(&self) -> Health;

    /// The counters of this bus.
    fn stats(&self) -> &BusStats;
}

/// A live subscription: a [`Stream`] of [`Delivery`]. Dropping it stops its readers.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
    health: watch::Receiver<Health>,
    _stop: DropGuard,
}

impl Subscription {
    pub(crate) fn new(rx: mpsc::Receiver<Delivery>, health: watch::Receiver<Health>, stop: CancellationToken) -> Self {
        Subscription {
            rx,
            health,
            _stop: stop.drop_guard(),
        }
    }

    /// The next delivery; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// Watches the subscription's health: `Down` while any of its readers cannot reach the
    /// backplane (a service fails readiness then).
    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }
}

impl Stream for Subscription {
    type Item = Delivery;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.rx.poll_recv(cx)
    }
}

/// The parts that are down: since when and why.
type DownParts = HashMap<String, (SystemTime, String)>;

/// Combines the health of several readers: up only when all are up.
#[derive(Debug, Clone)]
pub(crate) struct HealthTracker {
    inner: Arc<(Mutex<DownParts>, watch::Sender<Health>)>,
}

impl HealthTracker {
    pub(crate) fn new() -> (Self, watch::Receiver<Health>) {
        let (tx, rx) = watch::channel(Health::Up);
        (
            HealthTracker {
                inner: Arc::new((Mutex::new(HashMap::new()), tx)),
            },
            rx,
        )
    }

    pub(crate) fn down(&self, part: &str, reason: String) {
        let mut parts = self.inner.0.lock().unwrap();
        let since = parts.get(part).map(|p| p.0).unwrap_or_else(SystemTime::now);
        parts.insert(part.to_owned(), (since, reason));
        self.publish(&parts);
    }

    pub(crate) fn up(&self, part: &str) {
        let mut parts = self.inner.0.lock().unwrap();
        if parts.remove(part).is_some() {
            self.publish(&parts);
        }
    }

    fn publish(&self, parts: &DownParts) {
        let health = match parts.iter().min_by_key(|(_, (since, _))| *since) {
            None => Health::Up,
            Some((part, (since, reason))) => Health::Down {
                since: *since,
                reason: format!("{part}: {reason}"),
            },
        };
        self.inner.1.send_replace(health);
    }
}

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

/// Checks an event against the channel configuration before it is stored.
pub(crate) fn check_event(config: &BusConfig, channel: &Channel, event: &NewEvent) -> Result<(), BusError> {
    let spec = config
        .spec(channel)
        .ok_or_else(|| BusError::UnknownChannel(channel.clone()))?;
    if !spec.types.is_empty() && !spec.types.contains(&event.event_type) {
        return Err(BusError::UnknownType {
            channel: channel.clone(),
            event_type: event.event_type.clone(),
        });
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
    source: &str,
) -> bool {
    match config.spec(&env.channel) {
        Some(spec) if spec.types.is_empty() || spec.types.contains(&env.event_type) => true,
        _ => {
            stats.malformed(
                MalformedKind::UnknownType,
                source,
                &format!("type {} on channel {}", env.event_type, env.channel),
            );
            false
        }
    }
}

/// The backend, chosen in one place ([`connect`]) from the configuration.
#[derive(Clone, Debug)]
pub enum AnyBus {
    /// In-process.
    Memory(MemoryBus),
    /// Redis or Redis Cluster.
    Redis(RedisBus),
}

/// Opens the bus the configuration asks for: Redis when `redis_url` is set, memory otherwise.
pub async fn connect(config: BusConfig) -> Result<AnyBus, BusError> {
    config.validate()?;
    Ok(match config.redis_url.clone() {
        Some(_) => AnyBus::Redis(RedisBus::connect(config).await?),
        None => AnyBus::Memory(MemoryBus::new(config)?),
    })
}

impl AnyBus {
    /// The configuration this bus was opened with.
    pub fn config(&self) -> &BusConfig {
        match self {
            AnyBus::Memory(b) => b.config(),
            AnyBus::Redis(b) => b.config(),
        }
    }
}

impl Bus for AnyBus {
    async fn publish(&self, channel: &Channel, event: NewEvent) -> Result<Published, BusError> {
        match self {
            AnyBus::Memory(b) => b.publish(channel, event).await,
            AnyBus::Redis(b) => b.publish(channel, event).await,
        }
    }

    async fn publish_batch(&self, events: Vec<(Channel, NewEvent)>) -> Result<Vec<Published>, BusError> {
        match self {
            AnyBus::Memory(b) => b.publish_batch(events).await,
            AnyBus::Redis(b) => b.publish_batch(events).await,
        }
    }

    async fn subscribe(&self, channels: &[Channel], from: Option<&Cursor>) -> Result<Subscription, BusError> {
        match self {
            AnyBus::Memory(b) => b.subscribe(channels, from).await,
            AnyBus::Redis(b) => b.subscribe(channels, from).await,
        }
    }

    async fn replay(&self, channel: &Channel, after: EventId, limit: usize) -> Result<Replay, BusError> {
        match self {
            AnyBus::Memory(b) => b.replay(channel, after, limit).await,
            AnyBus::Redis(b) => b.replay(channel, after, limit).await,
        }
    }

    async fn head(&self, channels: &[Channel]) -> Result<Cursor, BusError> {
        match self {
            AnyBus::Memory(b) => b.head(channels).await,
            AnyBus::Redis(b) => b.head(channels).await,
        }
    }

    async fn publish_guarded(&self, channel: &Channel, event: NewEvent, guard: Guard) -> Result<Guarded, BusError> {
        match self {
            AnyBus::Memory(b) => b.publish_guarded(channel, event, guard).await,
            AnyBus::Redis(b) => b.publish_guarded(channel, event, guard).await,
        }
    }

    async fn set_state(&self, channel: &Channel, guard: Guard) -> Result<Guarded, BusError> {
        match self {
            AnyBus::Memory(b) => b.set_state(channel, guard).await,
            AnyBus::Redis(b) => b.set_state(channel, guard).await,
        }
    }

    async fn state(&self, channel: &Channel, entity: &str) -> Result<Option<String>, BusError> {
        match self {
            AnyBus::Memory(b) => b.state(channel, entity).await,
            AnyBus::Redis(b) => b.state(channel, entity).await,
        }
    }

    async fn published_with(&self, channel: &Channel, idempotency_key: &str) -> Result<Option<EventId>, BusError> {
        match self {
            AnyBus::Memory(b) => b.published_with(channel, idempotency_key).await,
            AnyBus::Redis(b) => b.published_with(channel, idempotency_key).await,
        }
    }

    async fn announce(
        &self,
        kind: &str,
        instance: &str,
        figures: &Figures,
        ttl: std::time::Duration,
    ) -> Result<(), BusError> {
        match self {
            AnyBus::Memory(b) => b.announce(kind, instance, figures, ttl).await,
            AnyBus::Redis(b) => b.announce(kind, instance, figures, ttl).await,
        }
    }

    async fn withdraw(&self, kind: &str, instance: &str) -> Result<(), BusError> {
        match self {
            AnyBus::Memory(b) => b.withdraw(kind, instance).await,
            AnyBus::Redis(b) => b.withdraw(kind, instance).await,
        }
    }

    async fn roster(&self, kind: &str) -> Result<Vec<(String, Figures)>, BusError> {
        match self {
            AnyBus::Memory(b) => b.roster(kind).await,
            AnyBus::Redis(b) => b.roster(kind).await,
        }
    }

    fn health(&self) -> Health {
        match self {
            AnyBus::Memory(b) => b.health(),
            AnyBus::Redis(b) => b.health(),
        }
    }

    fn stats(&self) -> &BusStats {
        match self {
            AnyBus::Memory(b) => b.stats(),
            AnyBus::Redis(b) => b.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> EventId {
        EventId::new(ms, 0)
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
    fn health_is_up_only_when_every_part_is() {
        let (h, rx) = HealthTracker::new();
        assert!(rx.borrow().is_up());
        h.down("a", "boom".into());
        h.down("b", "bang".into());
        h.up("a");
        assert!(!rx.borrow().is_up());
        h.up("b");
        assert!(rx.borrow().is_up());
    }
}
