//! The group commit's state ([`super::commit`]): per channel, whether a script call is in
//! flight and who waits for the next one.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use tokio::sync::oneshot;

use crate::{error::BusError, name::Channel, publish::Published};

/// Events per script call: long enough to amortise the round trip, short enough not to hold
/// Redis (single-threaded) for more than about a millisecond.
pub(crate) const EVENTS_PER_CALL: usize = 200;

/// One event ready for the publish script.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Its idempotency key, the whole Redis key (`...:dedupe:{<channel>}:<key>`).
    pub(crate) dedupe: Option<String>,
    /// The envelope JSON without `"id"`.
    pub(crate) body: String,
}

/// What one caller gets: an id per event, or why not.
pub(crate) type Reply = Result<Vec<Published>, BusError>;

/// A caller whose events wait for the next call.
pub(crate) struct Waiter {
    pub(crate) events: Vec<Prepared>,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// One channel's state: a call in flight (`busy`) and who waits for the next.
#[derive(Default)]
pub(crate) struct Lane {
    pub(crate) busy: bool,
    pub(crate) waiting: VecDeque<Waiter>,
}

/// Every channel's lane.
#[derive(Default)]
pub(crate) struct Commits {
    lanes: Mutex<HashMap<Channel, Lane>>,
}

impl std::fmt::Debug for Commits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commits").finish_non_exhaustive()
    }
}

impl Commits {
    pub(crate) fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Channel, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}
