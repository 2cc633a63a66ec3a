//! What a subscription yields, how healthy it is, and the subscription itself.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::SystemTime,
};

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    cursor::Cursor,
    envelope::{EventId, SharedEnvelope},
    error::BusError,
    name::Channel,
};

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

/// A change of what a subscription follows, for its reader.
#[derive(Debug)]
pub(crate) enum Change {
    /// Follow this channel too, from this position.
    Follow(Channel, EventId),
    /// Stop following this channel.
    Unfollow(Channel),
}

/// Changes waiting for a subscription's reader, at most.
pub(crate) const CHANGES: usize = 64;

/// Changes what a live [`Subscription`] follows, from any task while another reads it
/// ([`Subscription::follower`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Follower {
    tx: mpsc::Sender<Change>,
    channels: Arc<[Channel]>,
}

impl Follower {
    /// Follows `channel` too, from `from`: every event of it stored after `from` is delivered,
    /// the stored ones first, then the live ones, with no gap and no duplicate between them
    /// (the same seam as [`crate::Bus::subscribe`] from a cursor). Following a channel already
    /// followed changes nothing. The channel must be one of the bus's, or a partition of one.
    pub async fn follow(&self, channel: Channel, from: EventId) -> Result<(), BusError> {
        if !self.channels.iter().any(|c| c.as_str() == channel.logical()) {
            return Err(BusError::UnknownChannel(channel));
        }
        self.tx
            .send(Change::Follow(channel, from))
            .await
            .map_err(|_| BusError::Closed)
    }

    /// Stops following `channel` (on Redis: its shard channel is unsubscribed). Deliveries of
    /// it already on their way may still arrive.
    pub async fn unfollow(&self, channel: Channel) -> Result<(), BusError> {
        self.tx
            .send(Change::Unfollow(channel))
            .await
            .map_err(|_| BusError::Closed)
    }
}

/// A live subscription: a [`Stream`] of [`Delivery`]. Dropping it stops its readers.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
    health: watch::Receiver<Health>,
    follower: Follower,
    _stop: DropGuard,
}

impl Subscription {
    pub(crate) fn new(
        rx: mpsc::Receiver<Delivery>,
        health: watch::Receiver<Health>,
        follower: Follower,
        stop: CancellationToken,
    ) -> Self {
        Subscription {
            rx,
            health,
            follower,
            _stop: stop.drop_guard(),
        }
    }

    /// A follower and its reader's end: `channels` are those it may follow (the bus's).
    pub(crate) fn changes(channels: Vec<Channel>) -> (Follower, mpsc::Receiver<Change>) {
        let (tx, rx) = mpsc::channel(CHANGES);
        (
            Follower {
                tx,
                channels: channels.into(),
            },
            rx,
        )
    }

    /// What changes the channels this subscription follows: a gateway follows a channel from
    /// its first stream of it, and stops some time after its last.
    pub fn follower(&self) -> Follower {
        self.follower.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

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
