//! What the hub hands a connection: an event encoded once and shared, or a RESYNC.

use std::sync::Arc;

use bytes::Bytes;
use event_bus::{Channel, EventId, SharedEnvelope};
use prometheus::IntCounter;

use super::transport::Transport;
use crate::telemetry::metrics::Metrics;

/// An event as the hub shares it: the envelope, its JSON, and its delivered counters.
#[derive(Debug)]
pub struct HubEvent {
    /// The envelope.
    pub env: SharedEnvelope,
    /// `env` as one line of JSON, encoded once.
    pub json: Bytes,
    /// `realtime_events_delivered_total{type, transport}`, resolved once per event, indexed by
    /// [`Transport`].
    pub delivered: [IntCounter; 2],
}

impl HubEvent {
    /// Encodes an envelope for sharing.
    pub fn new(env: SharedEnvelope, metrics: &Metrics) -> Self {
        HubEvent {
            json: Bytes::from(env.to_json()),
            delivered: Transport::ALL.map(|t| {
                metrics
                    .events_delivered
                    .with_label_values(&[env.event_type.as_str(), t.as_str()])
            }),
            env,
        }
    }
}

/// What the hub hands a connection.
#[derive(Clone, Debug)]
pub enum Item {
    /// An event that matches the connection's filter.
    Event(Arc<HubEvent>),
    /// Events of a channel the connection follows are gone; it must reload. Boxed: resyncs
    /// are rare, and a small item keeps every connection's queue small.
    Resync(Box<(Channel, EventId)>),
}
