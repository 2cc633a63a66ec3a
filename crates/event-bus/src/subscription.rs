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
