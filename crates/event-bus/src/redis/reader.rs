//! Reading a stream to fill a gap: the gap rule first, then pages of `XRANGE` from the
//! subscriber's position to the stream's end.

use std::sync::Arc;

use fred::{interfaces::StreamsInterface, types::Value};
use tokio::sync::mpsc;

use super::{
    connection::{gap_at, RedisBus},
    value,
};
use crate::{
    bus::Broker,
    envelope::{decode_body, BodyError, Envelope, EventId},
    error::BusError,
    name::Channel,
    rules::type_allowed,
    stats::MalformedKind,
    subscription::Delivery,
};

/// One channel a subscription follows, and how far it has been delivered.
pub(super) struct Follow {
    pub channel: Channel,
    /// The channel's stream.
    pub key: String,
    /// The channel's shard channel, where its events are announced.
    pub live: String,
    /// The channel's Phase 27 pub/sub name, where Node code publishes plain envelopes.
    pub pubsub: String,
    /// The last event delivered (or skipped as malformed).
    pub pos: EventId,
    /// The stream's newest entry at the last tail check.
    pub tail: EventId,
}

/// Why a subscription's task stops reading for now.
pub(super) enum Stop {
    /// Redis failed; the task retries.
    Redis(BusError),
    /// The subscription was dropped; the task ends.
    SubscriberGone,
}

impl From<BusError> for Stop {
    fn from(e: BusError) -> Self {
        Stop::Redis(e)
    }
}

/// Sends `f`'s events after its position up to the stream's end; a RESYNC first when events
/// after the position are gone. Each full page is followed by another gap check, since the
/// stream may be trimmed past the position while a long gap is read.
pub(super) async fn catch_up(bus: &RedisBus, f: &mut Follow, tx: &mpsc::Sender<Delivery>) -> Result<(), Stop> {
    let client = bus.client();
    let batch = bus.config().read_batch.max(1);
    loop {
        if let Some(resume_from) = gap_at(client, &f.key, f.pos).await? {
            tracing::warn!(channel = %f.channel, position = %f.pos, %resume_from, "events after the position are gone: resync");
            bus.stats().resync();
            f.pos = resume_from;
            let d = Delivery::Resync {
                channel: f.channel.clone(),
                resume_from,
            };
            tx.send(d).await.map_err(|_| Stop::SubscriberGone)?;
        }
        let reply: Value = client
            .xrange(&f.key, format!("({}", f.pos), "+", Some(batch as u64))
            .await
            .map_err(BusError::redis("XRANGE (filling a gap)"))?;
        let entries = value::entries(reply)?;
        let full = entries.len() >= batch;
        for e in entries {
            deliver(bus, f, e.id, e.body.as_deref(), tx).await?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// Moves `f` to `id` and sends the event, unless it is malformed (counted and skipped).
pub(super) async fn deliver(
    bus: &RedisBus,
    f: &mut Follow,
    id: EventId,
    body: Option<&[u8]>,
    tx: &mpsc::Sender<Delivery>,
) -> Result<(), Stop> {
    f.pos = id;
    if let Ok(env) = classify(bus, &f.channel, id, body) {
        tx.send(Delivery::Event(Arc::new(env)))
            .await
            .map_err(|_| Stop::SubscriberGone)?;
        bus.stats().delivered(1);
    }
    Ok(())
}

/// A stream entry (or an announcement) as an envelope, or the kind of malformed entry it is
/// (counted, logged once).
pub(super) fn classify(
    bus: &RedisBus,
    channel: &Channel,
    id: EventId,
    body: Option<&[u8]>,
) -> Result<Envelope, MalformedKind> {
    let stats = bus.stats();
    // Written only for a malformed entry: every event passes here.
    let source = || format!("stream {channel} entry {id}");
    let Some(body) = body else {
        stats.malformed(MalformedKind::BadEntry, &source(), "no `e` field");
        return Err(MalformedKind::BadEntry);
    };
    match decode_body(channel, id, body) {
        Ok(env) if type_allowed(bus.config(), &env, stats, source) => Ok(env),
        Ok(_) => Err(MalformedKind::UnknownType),
        Err(BodyError::NotJson(e)) => {
            stats.malformed(MalformedKind::NotJson, &source(), &e);
            Err(MalformedKind::NotJson)
        }
        Err(BodyError::NotEnvelope(e)) => {
            stats.malformed(MalformedKind::NotEnvelope, &source(), &e);
            Err(MalformedKind::NotEnvelope)
        }
    }
}
