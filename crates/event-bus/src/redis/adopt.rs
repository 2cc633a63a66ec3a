//! Node interop: plain `PUBLISH rakuda:realtime:<channel> '<envelope without id>'`, as the
//! Phase 27 Node EventBus does, stored in the stream exactly once.
//!
//! Every subscription listens on its channels' pub/sub names ([`super::live`]). A message that
//! starts with `{"id":` was announced by a bus publish and is already stored. Any other valid
//! envelope is stored by the publish script with announce off (Node listeners have seen it
//! already), under the idempotency key `adopt:<hash of the message>:<n>`, where `n` counts
//! identical messages seen within the adoption window. All processes see the same messages in
//! the same order, so they compute the same keys, and the script's dedupe lets exactly one of
//! them store each message; every one of them learns its id (the first id of a duplicate) and
//! reads it from the stream like a missed announcement. Two identical messages are two events
//! (n = 1, 2).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use super::connection::RedisBus;
use crate::{
    bus::Broker,
    envelope::{decode_body, encode_body, Body, BodyError, EventId, NewEvent},
    name::Channel,
    rules::type_allowed,
    stats::MalformedKind,
};

/// Stores a plain publish once across all processes; its id, or `None` when it is not a valid
/// envelope (counted) or Redis refused five times (logged).
pub(super) async fn adopt_one(
    bus: &RedisBus,
    seen: &mut Occurrences,
    channel: &Channel,
    source: &str,
    bytes: &[u8],
) -> Option<EventId> {
    if serde_json::from_slice::<Body>(bytes).is_ok_and(|b| b.id.is_some()) {
        return None; // someone stored it and assigned its id
    }
    // The stream's own checks (an over-long payload.id is malformed too).
    let env = match decode_body(channel, EventId::ZERO, bytes) {
        Ok(env) => env,
        Err(BodyError::NotJson(e)) => {
            bus.stats().malformed(MalformedKind::NotJson, source, &e);
            return None;
        }
        Err(BodyError::NotEnvelope(e)) => {
            bus.stats().malformed(MalformedKind::NotEnvelope, source, &e);
            return None;
        }
    };
    if !type_allowed(bus.config(), &env, bus.stats(), || source.to_string()) {
        return None;
    }
    let stored = encode_body(
        channel,
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
    let key = bus.keys().dedupe(channel, &format!("adopt:{hex}:{n}"));
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=5 {
        match bus.adopt(channel, stored.clone(), key.clone()).await {
            Ok(p) => return Some(p.id),
            Err(e) if attempt == 5 => {
                tracing::error!(error = %e, %channel, "could not store a plain publish; it reached live listeners only");
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    None
}

/// Counts identical messages seen within the window.
pub(super) struct Occurrences {
    window: Duration,
    seen: HashMap<[u8; 16], (u32, Instant)>,
}

impl Occurrences {
    pub(super) fn new(window: Duration) -> Self {
        Occurrences {
            window,
            seen: HashMap::new(),
        }
    }

    pub(super) fn next(&mut self, hash: [u8; 16]) -> u32 {
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
