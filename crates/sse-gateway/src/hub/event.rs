//! What the hub hands a connection: an event encoded once and shared, or a RESYNC.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use event_bus::{Channel, Cursor, EventId, SharedEnvelope};
use prometheus::IntCounter;

use crate::{
    stream::frame::{Encoder, Frame, FRAMINGS},
    telemetry::{metrics::Metrics, transport::Transport},
};

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
    /// Events of the one channel a connection follows, shared with the shard's others that
    /// follow it alone ([`Span`]).
    Span(Arc<Span>),
}

impl Item {
    /// The channel it is of.
    pub fn channel(&self) -> &Channel {
        match self {
            Item::Event(e) => &e.env.channel,
            Item::Resync(r) => &r.0,
            Item::Presence(p) => &p.0,
            Item::Span(s) => &s.channel,
        }
    }

    /// How many events it carries, as a connection's queue counts them (at least one).
    pub fn weight(&self) -> usize {
        match self {
            Item::Span(s) => s.events.len().max(1),
            _ => 1,
        }
    }

    /// About the bytes its message takes in SSE: the JSON, and room for the `id:` line (the
    /// cursor's text) and the field names.
    pub fn size_hint(&self) -> usize {
        match self {
            Item::Event(e) => e.json.len() + e.cursor.get().map_or(64, |(_, text)| text.len() + 24),
            Item::Resync(_) => 160,
            Item::Presence(p) => p.1.len() + 24,
            // Shared: written as it is, from its own bytes.
            Item::Span(_) => 0,
        }
    }
}

/// Consecutive events of one channel, from one fan-out batch: spans of a shard's log, shared by
/// every connection of the shard that follows that channel alone (most streams). The first
/// stream of each framing encodes the span's messages once; the others write those bytes as
/// they are, in the same write as their own (vectored), nothing copied or looked at per event.
#[derive(Debug)]
pub struct Span {
    /// Their channel.
    pub channel: Channel,
    /// The events, oldest first (at least one).
    pub events: Vec<Arc<HubEvent>>,
    /// The ids of the first and the last, kept beside the events: every stream that takes the
    /// span asks for them ([`Span::first`], [`Span::last`]), without fetching an event.
    ids: (EventId, EventId),
    /// When each was stored (its id's ms), side by side: the streams that write the span tally
    /// these, without fetching each event.
    stamps: Box<[u64]>,
    /// Where each run of one type ends in `events` (exclusive).
    runs: Vec<usize>,
    /// The messages in each framing, encoded by the first stream that wrote them.
    frames: [OnceLock<Bytes>; FRAMINGS],
}

impl Span {
    /// A span of `events` (at least one, all of `channel`, oldest first).
    pub fn new(channel: Channel, events: Vec<Arc<HubEvent>>) -> Self {
        debug_assert!(!events.is_empty() && events.iter().all(|e| e.env.channel == channel));
        let id = |e: Option<&Arc<HubEvent>>| e.map_or(EventId::ZERO, |e| e.env.id);
        let mut runs = Vec::new();
        for (i, w) in events.windows(2).enumerate() {
            if w[0].env.event_type != w[1].env.event_type {
                runs.push(i + 1);
            }
        }
        runs.push(events.len());
        Span {
            channel,
            ids: (id(events.first()), id(events.last())),
            stamps: events.iter().map(|e| e.env.id.ms).collect(),
            runs,
            events,
            frames: Default::default(),
        }
    }

    /// The id of its first event.
    pub fn first(&self) -> EventId {
        self.ids.0
    }

    /// The id of its last event.
    pub fn last(&self) -> EventId {
        self.ids.1
    }

    /// Its runs of events of one type: an event of each (its type and counters), and when
    /// the run's events were stored.
    pub fn runs(&self) -> impl Iterator<Item = (&HubEvent, &[u64])> {
        let starts = std::iter::once(0).chain(self.runs.iter().copied());
        starts
            .zip(self.runs.iter().copied())
            .map(|(from, to)| (&*self.events[from], &self.stamps[from..to]))
    }

    /// The span's messages as `enc` frames them for a stream that follows this channel alone:
    /// each with the cursor after it, which is then the channel's position alone. Encoded once
    /// per framing, shared after.
    pub fn frames<E: Encoder>(&self, enc: &E) -> Bytes {
        self.frames[enc.framing()]
            .get_or_init(|| {
                let mut e = enc.fresh();
                let size: usize = self.events.iter().map(|ev| ev.json.len() + 96).sum();
                e.reserve(size);
                let mut cursor = Cursor::new();
                let mut text = Vec::with_capacity(64);
                for ev in &self.events {
                    cursor.set(self.channel.clone(), ev.env.id);
                    text.clear();
                    cursor.write_text(&mut text);
                    e.encode(Frame::Message {
                        cursor: Some(&text),
                        event: ev.env.event_type.as_str(),
                        data: &ev.json,
                    });
                }
                e.take().into_bytes()
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use event_bus::{Action, Envelope, EventType, Payload, Timestamp};

    use super::*;
    use crate::{
        telemetry::metrics::Metrics,
        transport::{sse::SseEncoder, ws::encoder::WsEncoder},
    };

    fn ev(metrics: &Metrics, ms: u64) -> Arc<HubEvent> {
        typed(metrics, ms, EventType::ORDER_RECEIVED)
    }

    fn typed(metrics: &Metrics, ms: u64, event_type: EventType) -> Arc<HubEvent> {
        let env = Arc::new(Envelope {
            id: EventId::new(ms, 0),
            event_type,
            channel: Channel::ORDERS,
            payload: Payload::new(format!("o{ms}"), Action::Created),
            timestamp: Timestamp::now(),
            traceparent: None,
        });
        Arc::new(HubEvent::new(env, metrics))
    }

    /// What a stream that follows the channel alone writes, event by event.
    fn one_by_one<E: Encoder>(mut e: E, events: &[Arc<HubEvent>]) -> Vec<u8> {
        let mut cursor = Cursor::new();
        for ev in events {
            cursor.advance(&ev.env.channel, ev.env.id);
            let text = cursor.to_string();
            e.encode(Frame::Message {
                cursor: Some(text.as_bytes()),
                event: ev.env.event_type.as_str(),
                data: &ev.json,
            });
        }
        e.take().to_vec()
    }

    #[test]
    fn a_span_is_encoded_once_per_framing_as_its_events_one_by_one() {
        let metrics = Metrics::new("span-test");
        let events: Vec<_> = (1..=3).map(|ms| ev(&metrics, ms)).collect();
        let span = Span::new(Channel::ORDERS, events.clone());
        assert_eq!((span.first(), span.last()), (EventId::new(1, 0), EventId::new(3, 0)));
        let runs: Vec<(&str, Vec<u64>)> = span
            .runs()
            .map(|(e, s)| (e.env.event_type.as_str(), s.to_vec()))
            .collect();
        assert_eq!(runs, [("ORDER_RECEIVED", vec![1, 2, 3])], "one type, one run");
        // Types change: a run each, in order, each with its events' times.
        let [a, b] = [EventType::ORDER_RECEIVED, EventType::INVENTORY_CHANGE];
        let mixed: Vec<_> = [(1, &a), (2, &b), (3, &b), (4, &a)]
            .into_iter()
            .map(|(ms, t)| typed(&metrics, ms, t.clone()))
            .collect();
        let mixed = Span::new(Channel::ORDERS, mixed);
        let runs: Vec<(&str, Vec<u64>)> = mixed
            .runs()
            .map(|(e, s)| (e.env.event_type.as_str(), s.to_vec()))
            .collect();
        assert_eq!(
            runs,
            [
                ("ORDER_RECEIVED", vec![1]),
                ("INVENTORY_CHANGE", vec![2, 3]),
                ("ORDER_RECEIVED", vec![4])
            ]
        );
        let unnamed = span.frames(&SseEncoder::new(false));
        assert_eq!(unnamed.to_vec(), one_by_one(SseEncoder::new(false), &events));
        assert_eq!(
            span.frames(&SseEncoder::new(true)).to_vec(),
            one_by_one(SseEncoder::new(true), &events)
        );
        assert_eq!(
            span.frames(&WsEncoder::default()).to_vec(),
            one_by_one(WsEncoder::default(), &events)
        );
        // Shared: the second stream of a framing gets the same bytes, not a copy.
        assert_eq!(span.frames(&SseEncoder::new(false)).as_ptr(), unnamed.as_ptr());
    }
}
