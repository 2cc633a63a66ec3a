//! The live path of a subscription: its channels' announcements on their shard channels
//! (`SSUBSCRIBE`, on the master that owns each one on a Cluster), delivered as they come. Each announcement names the id before it (`{"id":"<id>","prev":"<id before>",...}`),
//! so a subscriber whose position is not `prev` knows exactly that it missed something and
//! reads the stream to fill the gap ([`reader::catch_up`]). The stream is read only then: at
//! the start (a replay from a cursor, and whatever was stored before the `SUBSCRIBE`), after a
//! gap, after the pub/sub connection was lost or fell behind, and when the tail check finds an
//! entry that was stored a second ago and never announced (a lost last announcement).
//!
//! So a gateway costs Redis one pub/sub delivery per event, plus one `XREVRANGE COUNT 1` per
//! channel per second, however many events there are.
//!
//! A slot that moves to another master (a reshard) takes its shard channels' subscribers with
//! it: the old master ends them (a server `SUNSUBSCRIBE`, which the client library drops). The
//! tail check finds the channel's announcements missing, the stream fills the gap, and the
//! channel is subscribed again, which follows `MOVED` to the slot's new master. After a
//! failover the connection itself drops and every shard channel is subscribed again.
//!
//! With `adopt_plain_publishes`, the Phase 27 channels are also subscribed (classic
//! `SUBSCRIBE`) to hear Node code's plain publishes; announcements heard there
//! (`announce_plain`) are left to the shard channel.

use std::time::Duration;

use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface, StreamsInterface},
    types::{Message, Value},
};
use tokio::sync::{broadcast, broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    adopt::{adopt_one, Occurrences},
    connection::{client_builder, keep_routing, RedisBus},
    followed::Followed,
    heard::{heard, Heard},
    reader::{catch_up, deliver, Follow, Stop},
    value,
};
use crate::{
    bus::Broker,
    envelope::EventId,
    error::BusError,
    name::Channel,
    stats::MalformedKind,
    subscription::{Change, Delivery, HealthTracker},
};

const PUBSUB: &str = "pub/sub listener";
const READER: &str = "stream reader";
/// How often the newest entry of each stream is compared with what was delivered.
const TAIL_CHECK: Duration = Duration::from_secs(1);

/// Subscribes to `positions`' channels and starts the task that delivers them into `tx`.
pub(super) async fn spawn(
    bus: RedisBus,
    positions: Vec<(Channel, EventId)>,
    tx: mpsc::Sender<Delivery>,
    changes: mpsc::Receiver<Change>,
    health: HealthTracker,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let sub: SubscriberClient = client_builder(bus.config())?
        .build_subscriber_client()
        .map_err(BusError::redis("configure pub/sub client"))?;
    let routing = sub.init().await.map_err(BusError::redis("connect pub/sub client"))?;
    keep_routing(sub.clone(), routing);
    let follows: Vec<Follow> = positions
        .into_iter()
        .map(|(channel, pos)| follow(&bus, channel, pos))
        .collect();
    let events = Events {
        changes,
        messages: sub.message_rx(),
        reconnects: sub.reconnect_rx(),
        errors: sub.error_rx(),
    };
    if let Err(e) = listen(&sub, &follows, bus.config().adopt_plain_publishes).await {
        let _ = sub.quit().await;
        return Err(e);
    }
    let resubscriber = sub.manage_subscriptions();
    let span =
        tracing::info_span!("subscription", channels = ?follows.iter().map(|f| f.channel.as_str()).collect::<Vec<_>>());
    let live = Live {
        seen: Occurrences::new(Duration::from_secs(bus.config().adopt_window_secs)),
        started: false,
        bus,
        f: Followed::new(follows),
        tx,
        health,
        sub: sub.clone(),
        pubsub_down: false,
        up_after_fill: false,
    };
    let task = async move {
        live.run(events, stop).await;
        resubscriber.abort();
        let _ = sub.quit().await;
    };
    tokio::spawn(task.instrument(span));
    Ok(())
}

/// Subscribes each channel's shard channel, one at a time (each may live on another master,
/// and a redirected `SSUBSCRIBE` is followed only when sent alone), and, to hear Node code's
/// plain publishes, the Phase 27 channels.
async fn listen(sub: &SubscriberClient, follows: &[Follow], plain: bool) -> Result<(), BusError> {
    for f in follows {
        sub.ssubscribe(f.live.clone())
            .await
            .map_err(BusError::redis("SSUBSCRIBE"))?;
    }
    if plain {
        let names: Vec<String> = follows.iter().map(|f| f.pubsub.clone()).collect();
        sub.subscribe(names).await.map_err(BusError::redis("SUBSCRIBE"))?;
    }
    Ok(())
}

fn follow(bus: &RedisBus, channel: Channel, pos: EventId) -> Follow {
    Follow {
        key: bus.keys().stream(&channel),
        live: bus.keys().live(&channel),
        pubsub: bus.keys().pubsub(&channel),
        channel,
        pos,
        tail: EventId::ZERO,
    }
}

struct Events {
    changes: mpsc::Receiver<Change>,
    messages: broadcast::Receiver<Message>,
    reconnects: broadcast::Receiver<fred::types::config::Server>,
    errors: broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>,
}

struct Live {
    bus: RedisBus,
    /// The channels, and per channel whether its stream or shard channel needs attention.
    f: Followed,
    /// Whether the first read (the replay) is done: later reads fill gaps, and are counted.
    started: bool,
    tx: mpsc::Sender<Delivery>,
    health: HealthTracker,
    seen: Occurrences,
    sub: SubscriberClient,
    /// The listener reported an error and is not known to be back.
    pubsub_down: bool,
    /// The listener came back: it is reported up once the streams were read.
    up_after_fill: bool,
}

impl Live {
    async fn run(mut self, mut ev: Events, stop: CancellationToken) {
        let mut failing = false;
        let mut backoff = Duration::from_millis(50);
        let mut tail = tokio::time::interval(TAIL_CHECK);
        tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tail.reset();
        loop {
            // A change first: once a delivery sent after it was asked for arrives, it holds.
            let step = if let Ok(c) = ev.changes.try_recv() {
                self.change(c).await
            } else if self.f.dirty.contains(&true) {
                tokio::select! {
                    r = self.fill() => r,
                    _ = stop.cancelled() => break,
                }
            } else {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(c) = ev.changes.recv() => self.change(c).await,
                    m = ev.messages.recv() => match m {
                        Ok(m) => self.on_message(m).await,
                        Err(RecvError::Lagged(n)) => {
                            self.bus.stats().lagged(n);
                            tracing::warn!(lost = n, "pub/sub listener fell behind; reading the streams instead");
                            self.f.dirty.fill(true);
                            Ok(())
                        }
                        Err(RecvError::Closed) => break,
                    },
                    Ok(_) = ev.reconnects.recv() => {
                        // Whatever was announced while the connection was down is in the streams:
                        // read them, and only then say the listener is up.
                        self.bus.stats().reconnect();
                        self.up_after_fill = true;
                        self.f.dirty.fill(true);
                        Ok(())
                    }
                    Ok((e, _)) = ev.errors.recv() => {
                        self.health.down(PUBSUB, e.to_string());
                        self.pubsub_down = true;
                        Ok(())
                    }
                    _ = tail.tick() => {
                        // Errors and reconnections arrive on two channels, so a stale error may
                        // be taken after the reconnection, or the reconnection not yet: the
                        // connection's state settles it, as a reconnection would (the streams
                        // read first, so a stream opened once readiness is back sees no RESYNC
                        // of a gap from before it).
                        if (self.pubsub_down || self.up_after_fill) && self.sub.is_connected() {
                            self.up_after_fill = true;
                            self.f.dirty.fill(true);
                            Ok(())
                        } else {
                            self.tail_check().await
                        }
                    }
                }
            };
            match step {
                Ok(()) => {
                    if failing {
                        failing = false;
                        tracing::info!("subscription is reading redis again");
                    }
                    self.health.up(READER);
                    backoff = Duration::from_millis(50);
                }
                Err(Stop::SubscriberGone) => break,
                Err(Stop::Redis(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "subscription lost redis; retrying");
                    }
                    failing = true;
                    self.f.dirty.fill(true);
                    self.health.down(READER, e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        self.health.up(PUBSUB);
        self.health.up(READER);
    }

    /// Follows a channel from a position (subscribed first, then its stream read from the
    /// position: nothing announced in between is missed), or stops following one. A failed
    /// subscribe is retried by the tail check.
    async fn change(&mut self, change: Change) -> Result<(), Stop> {
        let plain = self.bus.config().adopt_plain_publishes;
        match change {
            Change::Follow(channel, pos) => {
                if self.f.contains(&channel) {
                    return Ok(());
                }
                let f = follow(&self.bus, channel, pos);
                let subscribed = listen(&self.sub, std::slice::from_ref(&f), plain).await;
                self.f.push(f, subscribed.is_err());
                subscribed.map_err(Stop::Redis)
            }
            Change::Unfollow(channel) => {
                let Some(f) = self.f.remove(&channel) else {
                    return Ok(());
                };
                let _ = self.sub.sunsubscribe(f.live).await;
                if plain {
                    let _ = self.sub.unsubscribe(f.pubsub).await;
                }
                Ok(())
            }
        }
    }

    /// Reads every dirty channel's stream up to its end; then the listener is up again if a
    /// reconnection was waiting for this.
    async fn fill(&mut self) -> Result<(), Stop> {
        for (f, dirty) in self.f.list.iter_mut().zip(self.f.dirty.iter_mut()) {
            if *dirty {
                if self.started {
                    self.bus.stats().gap_filled();
                }
                catch_up(&self.bus, f, &self.tx).await?;
                *dirty = false;
            }
        }
        self.started = true;
        if self.up_after_fill && self.sub.is_connected() {
            self.up_after_fill = false;
            self.pubsub_down = false;
            self.health.up(PUBSUB);
        }
        Ok(())
    }

    async fn on_message(&mut self, m: Message) -> Result<(), Stop> {
        let Some((i, live)) = self.f.find(&m.channel) else {
            return Ok(());
        };
        let Some(bytes) = m.value.as_bytes() else {
            let source = format!("pub/sub {}", m.channel);
            self.bus
                .stats()
                .malformed(MalformedKind::NotJson, &source, "not a string");
            return Ok(());
        };
        let f = &mut self.f.list[i];
        match heard(bytes) {
            // A classic announcement (`announce_plain`): the shard channel has it too.
            Heard::Announced { .. } | Heard::Stored if !live => {}
            Heard::Plain if live => {}
            Heard::Announced { id, prev } => {
                if id <= f.pos {
                    // Read from the stream already.
                } else if prev == Some(f.pos) {
                    deliver(&self.bus, f, id, Some(bytes), &self.tx).await?;
                } else {
                    self.f.dirty[i] = true;
                }
            }
            Heard::Stored => {}
            Heard::Plain if self.bus.config().adopt_plain_publishes => {
                let source = format!("pub/sub {}", m.channel);
                let channel = f.channel.clone();
                let adopted = adopt_one(&self.bus, &mut self.seen, &channel, &source, bytes).await;
                if adopted.is_some_and(|id| id > self.f.list[i].pos) {
                    self.f.dirty[i] = true;
                }
            }
            Heard::Plain => {}
        }
        Ok(())
    }

    /// Marks a channel dirty whose newest entry at its last check (a second ago, or a turn of
    /// the rotation ago) has still not been delivered: its announcement was lost.
    async fn tail_check(&mut self) -> Result<(), Stop> {
        let client = self.bus.client();
        let batch = self.f.tail_batch();
        let lasts = futures::future::join_all(
            batch
                .iter()
                .map(|&i| client.xrevrange::<Value, _, _, _>(&self.f.list[i].key, "+", "-", Some(1))),
        )
        .await;
        for (&i, last) in batch.iter().zip(lasts) {
            let f = &mut self.f.list[i];
            if f.tail > f.pos {
                self.f.dirty[i] = true;
                self.f.unheard[i] = true;
            }
            let last = value::entries(last.map_err(BusError::redis("XREVRANGE (tail check)"))?)?;
            f.tail = last.first().map_or(EventId::ZERO, |e| e.id);
        }
        // An announcement lost, or this subscriber ended by a reshard: subscribed again, on
        // the master that owns the slot now (a second SSUBSCRIBE of a live one is a no-op).
        // The first try after a reshard may fail on the redirection; the next check retries.
        for (f, unheard) in self.f.list.iter().zip(self.f.unheard.iter_mut()) {
            if *unheard {
                tracing::info!(channel = %f.live, "announcements missing; subscribing again");
                self.sub
                    .ssubscribe(f.live.clone())
                    .await
                    .map_err(BusError::redis("SSUBSCRIBE (again)"))?;
                *unheard = false;
                self.bus.stats().resubscribed();
            }
        }
        Ok(())
    }
}
