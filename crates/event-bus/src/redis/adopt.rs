//! Node interop: plain `PUBLISH rakuda:realtime:<channel> '<envelope without id>'`, as the
//! Phase 27 Node EventBus does, stored in the stream exactly once.
//!
//! Every subscribing process listens on the channels' pub/sub names. A message that starts with
//! `{"id":` was announced by a bus publish and is already stored: it is ignored. Any other valid
//! envelope is stored by the publish script with announce off (Node listeners have seen it
//! already), under the idempotency key `adopt:<hash of the message>:<n>`, where `n` counts
//! identical messages seen within the adoption window. All processes see the same messages in
//! the same order, so they compute the same keys, and `SET NX`-style dedupe in the script lets
//! exactly one of them store each message. Two identical messages are two events (n = 1, 2).
//! Subscribers then receive it from the stream like any other event, resumable by cursor.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    types::Message,
};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::connection::{client_builder, RedisBus};
use crate::{
    bus::Bus,
    envelope::{decode_body, encode_body, Body, BodyError, EventId, NewEvent},
    error::BusError,
    name::Channel,
    rules::type_allowed,
    stats::MalformedKind,
    subscription::HealthTracker,
};

const PART: &str = "pub/sub listener";

pub(super) async fn spawn_adopter(
    bus: RedisBus,
    channels: Vec<Channel>,
    health: HealthTracker,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let sub: SubscriberClient = client_builder(bus.config())?
        .build_subscriber_client()
        .map_err(BusError::redis("configure pub/sub client"))?;
    sub.init().await.map_err(BusError::redis("connect pub/sub client"))?;
    let names: Vec<String> = channels.iter().map(|c| bus.keys().pubsub(c)).collect();
    let mut messages = sub.message_rx();
    let mut reconnects = sub.reconnect_rx();
    let mut errors = sub.error_rx();
    sub.subscribe(names).await.map_err(BusError::redis("SUBSCRIBE"))?;
    let resubscriber = sub.manage_subscriptions();
    let window = Duration::from_secs(bus.config().adopt_window_secs);
    let task = async move {
        let mut seen = Occurrences::new(window);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                m = messages.recv() => match m {
                    Ok(m) => adopt_one(&bus, &mut seen, m).await,
                    Err(RecvError::Lagged(n)) => {
                        bus.stats().lagged(n);
                        tracing::warn!(lost = n, "pub/sub listener fell behind; plain publishes were lost");
                    }
                    Err(RecvError::Closed) => break,
                },
                Ok(_) = reconnects.recv() => health.up(PART),
                Ok((e, _)) = errors.recv() => health.down(PART, e.to_string()),
            }
        }
        health.up(PART);
        resubscriber.abort();
        let _ = sub.quit().await;
    };
    tokio::spawn(task.instrument(tracing::info_span!("pubsub_listener")));
    Ok(())
}

async fn adopt_one(bus: &RedisBus, seen: &mut Occurrences, m: Message) {
    let Some(channel) = bus.keys().channel_of_pubsub(&m.channel) else {
        return;
    };
    let source = format!("pub/sub {}", m.channel);
    let Some(bytes) = m.value.as_bytes() else {
        bus.stats().malformed(MalformedKind::NotJson, &source, "not a string");
        return;
    };
    if bytes.starts_with(b"{\"id\":") {
        return; // announced by a bus publish: stored already
    }
    if serde_json::from_slice::<Body>(bytes).is_ok_and(|b| b.id.is_some()) {
        return; // someone stored it and assigned its id
    }
    // The stream's own checks (an over-long payload.id is malformed too).
    let env = match decode_body(&channel, EventId::ZERO, bytes) {
        Ok(env) => env,
        Err(BodyError::NotJson(e)) => return bus.stats().malformed(MalformedKind::NotJson, &source, &e),
        Err(BodyError::NotEnvelope(e)) => return bus.stats().malformed(MalformedKind::NotEnvelope, &source, &e),
    };
    if !type_allowed(bus.config(), &env, bus.stats(), &source) {
        return;
    }
    let stored = encode_body(
        &channel,
        &NewEvent {
            event_type: env.event_type,
            payload: env.payload,
            timestamp: env.timestamp,
            idempotency_key: None,
            traceparent: env.traceparent,
        },
    );
    let hash = Sha256::digest(bytes);
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    let n = seen.next(hash[..16].try_into().expect("16 bytes"));
    let key = bus.keys().dedupe(&channel, &format!("adopt:{hex}:{n}"));
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=5 {
        match bus.adopt(&channel, stored.clone(), key.clone()).await {
            Ok(_) => return,
            Err(e) if attempt == 5 => {
                tracing::error!(error = %e, %channel, "could not store a plain publish; it reached live listeners only");
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Counts identical messages seen within the window.
struct Occurrences {
    window: Duration,
    seen: HashMap<[u8; 16], (u32, Instant)>,
}

impl Occurrences {
    fn new(window: Duration) -> Self {
        Occurrences {
            window,
            seen: HashMap::new(),
        }
    }

    fn next(&mut self, hash: [u8; 16]) -> u32 {
        let now = Instant::now();
        if self.seen.len() >= 10_000 {
            let window = self.window;
            self.seen.retain(|_, (_, at)| now.duration_since(*at) < window);
        }
        let e = self.seen.entry(hash).or_insert((0, now));
        if now.duration_since(e.1) >= self.window {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = now;
        e.0
    }
}
