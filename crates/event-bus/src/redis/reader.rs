//! Stream readers: one `XREAD BLOCK` loop per hash slot, feeding one subscription.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    interfaces::{ClientLike, StreamsInterface},
    prelude::Options,
    types::Value,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    connection::{gap_at, RedisBus},
    value,
};
use crate::{
    bus::Bus,
    envelope::{decode_body, BodyError, Envelope, EventId},
    error::BusError,
    name::Channel,
    rules::type_allowed,
    stats::MalformedKind,
    subscription::{Delivery, HealthTracker},
};

/// How long one `XREAD` blocks before it is sent again.
const BLOCK_MS: u64 = 2_000;
/// A reader whose subscriber made it wait this long re-checks for trimmed events.
const STALL: Duration = Duration::from_secs(1);

/// Starts the readers for `positions`: one for all channels on a single Redis, one per hash
/// slot on a cluster (where one `XREAD` may not span slots).
pub(super) fn spawn_readers(
    bus: RedisBus,
    positions: Vec<(Channel, EventId)>,
    tx: mpsc::Sender<Delivery>,
    health: HealthTracker,
    stop: CancellationToken,
) {
    let mut groups: BTreeMap<u16, Vec<(Channel, EventId)>> = BTreeMap::new();
    let clustered = bus.client().is_clustered();
    for (channel, pos) in positions {
        let slot = if clustered {
            fred::util::redis_keyslot(bus.keys().stream(&channel).as_bytes())
        } else {
            0
        };
        groups.entry(slot).or_default().push((channel, pos));
    }
    for (slot, group) in groups {
        let part = format!("stream reader (slot {slot})");
        let span = tracing::info_span!("stream_reader", slot, channels = ?group.iter().map(|g| g.0.as_str()).collect::<Vec<_>>());
        let reader = Reader {
            bus: bus.clone(),
            keys: group.iter().map(|(c, _)| bus.keys().stream(c)).collect(),
            group,
            tx: tx.clone(),
            health: health.clone(),
            part,
        };
        tokio::spawn(reader.run(stop.clone()).instrument(span));
    }
}

struct Reader {
    bus: RedisBus,
    keys: Vec<String>,
    group: Vec<(Channel, EventId)>,
    tx: mpsc::Sender<Delivery>,
    health: HealthTracker,
    part: String,
}

enum Stop {
    Redis(BusError),
    SubscriberGone,
}

impl From<BusError> for Stop {
    fn from(e: BusError) -> Self {
        Stop::Redis(e)
    }
}

impl Reader {
    async fn run(mut self, stop: CancellationToken) {
        // A dedicated connection: XREAD BLOCK holds it, so it must not be shared.
        let client = self.bus.client().clone_new();
        let mut connected = false;
        let mut check = true;
        let mut failing = false;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                if !connected {
                    client.init().await.map_err(BusError::redis("connect stream reader"))?;
                    connected = true;
                }
                self.read_once(&client, &mut check).await
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.cancelled() => break,
            };
            match result {
                Ok(()) => {
                    if failing {
                        failing = false;
                        self.bus.stats().reconnect();
                        tracing::info!("stream reader is reading again");
                    }
                    self.health.up(&self.part);
                    backoff = Duration::from_millis(50);
                }
                Err(Stop::SubscriberGone) => break,
                Err(Stop::Redis(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "stream reader lost redis; retrying");
                    }
                    failing = true;
                    check = true;
                    self.health.down(&self.part, e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        self.health.up(&self.part);
        let _ = client.quit().await;
    }

    /// One round: the gap check when due, one `XREAD`, and the deliveries it yields.
    async fn read_once(&mut self, client: &Client, check: &mut bool) -> Result<(), Stop> {
        if *check {
            for (i, (channel, pos)) in self.group.iter_mut().enumerate() {
                if let Some(resume_from) = gap_at(client, &self.keys[i], *pos).await? {
                    tracing::warn!(%channel, position = %pos, %resume_from, "events after the position are gone: resync");
                    self.bus.stats().resync();
                    *pos = resume_from;
                    let d = Delivery::Resync {
                        channel: channel.clone(),
                        resume_from,
                    };
                    self.tx.send(d).await.map_err(|_| Stop::SubscriberGone)?;
                }
            }
            *check = false;
        }
        let batch = self.bus.config().read_batch;
        let ids: Vec<String> = self.group.iter().map(|(_, pos)| pos.to_string()).collect();
        let options = Options {
            timeout: Some(Duration::from_millis(BLOCK_MS) + self.bus.config().command_timeout()),
            ..Default::default()
        };
        let reply: Value = client
            .with_options(&options)
            .xread(Some(batch as u64), Some(BLOCK_MS), self.keys.clone(), ids)
            .await
            .map_err(BusError::redis("XREAD"))?;
        let started = Instant::now();
        for (key, entries) in value::xread_reply(reply)? {
            let Some(i) = self.keys.iter().position(|k| *k == key) else {
                continue;
            };
            // A full batch means the reader may be behind: check for trimming next round.
            *check |= entries.len() >= batch;
            let channel = self.group[i].0.clone();
            for entry in entries {
                self.group[i].1 = entry.id;
                if let Some(env) = decode(&self.bus, &channel, entry.id, entry.body) {
                    self.tx
                        .send(Delivery::Event(Arc::new(env)))
                        .await
                        .map_err(|_| Stop::SubscriberGone)?;
                    self.bus.stats().delivered(1);
                }
            }
        }
        *check |= started.elapsed() > STALL;
        Ok(())
    }
}

/// A stream entry as an envelope; malformed entries are counted, logged once per kind, and
/// skipped (`None`).
pub(super) fn decode(bus: &RedisBus, channel: &Channel, id: EventId, body: Option<Vec<u8>>) -> Option<Envelope> {
    classify(bus, channel, id, body).ok()
}

/// A stream entry as an envelope, or the kind of malformed entry it is (counted, logged once).
pub(super) fn classify(
    bus: &RedisBus,
    channel: &Channel,
    id: EventId,
    body: Option<Vec<u8>>,
) -> Result<Envelope, MalformedKind> {
    let stats = bus.stats();
    let source = format!("stream {channel} entry {id}");
    let Some(body) = body else {
        stats.malformed(MalformedKind::BadEntry, &source, "no `e` field");
        return Err(MalformedKind::BadEntry);
    };
    match decode_body(channel, id, &body) {
        Ok(env) if type_allowed(bus.config(), &env, stats, &source) => Ok(env),
        Ok(_) => Err(MalformedKind::UnknownType),
        Err(BodyError::NotJson(e)) => {
            stats.malformed(MalformedKind::NotJson, &source, &e);
            Err(MalformedKind::NotJson)
        }
        Err(BodyError::NotEnvelope(e)) => {
            stats.malformed(MalformedKind::NotEnvelope, &source, &e);
            Err(MalformedKind::NotEnvelope)
        }
    }
}
