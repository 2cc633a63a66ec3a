//! The roles both backends implement: the [`Broker`], [`Presence`] and per-entity [`EntityState`]
//! ([`Bus`] is all three), and the page a replay answers.

use std::future::Future;

use crate::{
    cursor::Cursor,
    envelope::{EventId, NewEvent, SharedEnvelope},
    error::BusError,
    name::Channel,
    publish::{Guard, Guarded, Published},
    stats::BusStats,
    subscription::{Health, Subscription},
};

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

/// The broker: stores events durably (within retention) and delivers them in order. A
/// subscription's channels can change while it runs ([`crate::Follower`]).
///
/// Guarantees, for both backends:
/// - events of one channel are delivered in publish order, each once per subscription;
/// - a subscription from a cursor yields every stored event after it, then live events, with no
///   gap and no duplicate where the two meet;
/// - a gap (events trimmed by retention, or lost by the store) is reported as
///   [`Delivery::Resync`], never silent;
/// - a subscription survives backplane outages: it reconnects and continues from where it was,
///   and reports its [`Health`] meanwhile.
pub trait Broker: Send + Sync + 'static {
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

    /// Whether publishing currently works.
    fn health(&self) -> Health;

    /// The counters of this bus.
    fn stats(&self) -> &BusStats;
}

/// Presence of service instances: each announces its live figures under a key that expires
/// unless announced again, and anyone reads the roster (a gateway's fair share, the stats).
pub trait Presence: Send + Sync + 'static {
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
}

/// Per-entity state moved atomically with the events that change it: the worker-emitter's
/// exactly-once (an inventory check publishes a stock-out once however often it runs).
pub trait EntityState: Send + Sync + 'static {
    /// Publishes `event` on `channel` only if `guard.entity`'s state is `guard.expect`, and
    /// moves the state to `guard.set` in the same atomic step (see [`Guard`]). A repeated
    /// idempotency key answers the first publish's id whatever the state (a retried job).
    fn publish_guarded(
        &self,
        channel: &Channel,
        event: NewEvent,
        guard: Guard,
    ) -> impl Future<Output = Result<Guarded, BusError>> + Send;

    /// Moves an entity's state like [`EntityState::publish_guarded`] without publishing anything (a
    /// first observation that is a baseline, not a change). Answers `Done` with the
    /// channel's current head id, or `Conflict`.
    fn set_state(&self, channel: &Channel, guard: Guard) -> impl Future<Output = Result<Guarded, BusError>> + Send;

    /// An entity's state, as the last guarded publish or [`EntityState::set_state`] left it.
    fn state(&self, channel: &Channel, entity: &str) -> impl Future<Output = Result<Option<String>, BusError>> + Send;
}

/// Every role of a backend: the [`Broker`], [`Presence`] and [`EntityState`]. Implemented for each
/// type that has the three.
pub trait Bus: Broker + Presence + EntityState {}

impl<T: Broker + Presence + EntityState> Bus for T {}
