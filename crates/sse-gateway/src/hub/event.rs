//! What the hub hands a connection: an event encoded once and shared, or a RESYNC.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use event_bus::{Channel, Cursor, EventId, SharedEnvelope};
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
    /// The text of the cursor after this event, for the first connection that wrote it: the
    /// connections that follow the same channels and are in step (most of them) have the same
    /// cursor, and write this text instead of encoding their own.
    cursor: OnceLock<(Cursor, Box<[u8]>)>,
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
            cursor: OnceLock::new(),
        }
    }

    /// The same event for another shard of the hub: the bytes shared, the reference count and
    /// the cursor's text its own (one counter touched from two threads per delivery was a
    /// tenth of a burst's fan-out).
    pub fn for_another_shard(&self) -> HubEvent {
        HubEvent {
            env: self.env.clone(),
            json: self.json.clone(),
            delivered: self.delivered.clone(),
            cursor: OnceLock::new(),
        }
    }

    /// The text of `cursor`, the position of a connection just past this event: the shared
    /// one when it is the same cursor, else encoded into `scratch` (and shared if it is the
    /// first).
    pub fn cursor_text<'a>(&'a self, cursor: &Cursor, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if let Some((c, text)) = self.cursor.get() {
            if c == cursor {
                return text;
            }
        }
        scratch.clear();
        cursor.write_text(scratch);
        if self.cursor.get().is_none() {
            let _ = self.cursor.set((cursor.clone(), scratch.as_slice().into()));
        }
        scratch
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
    /// Who is connected to a channel now, for the connections that asked (`crate::presence`):
    /// the channel and the `PRESENCE` message's JSON.
    Presence(Arc<(Channel, bytes::Bytes)>),
}

impl Item {
    /// The channel it is of.
    pub fn channel(&self) -> &Channel {
        match self {
            Item::Event(e) => &e.env.channel,
            Item::Resync(r) => &r.0,
            Item::Presence(p) => &p.0,
        }
    }

    /// About the bytes its message takes in SSE: the JSON, and room for the `id:` line (the
    /// cursor's text) and the field names.
    pub fn size_hint(&self) -> usize {
        match self {
            Item::Event(e) => e.json.len() + e.cursor.get().map_or(64, |(_, text)| text.len() + 24),
            Item::Resync(_) => 160,
            Item::Presence(p) => p.1.len() + 24,
        }
    }
}
