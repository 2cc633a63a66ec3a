//! [`Bus`] on Redis: publish (one script per channel), subscribe (the live path: pub/sub
//! announcements, the stream read to fill gaps), replay, head, guarded publishes, presence.

use std::{sync::Arc, time::Duration};

use fred::{
    interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface, SortedSetsInterface, StreamsInterface},
    types::Value,
};
use tokio_util::sync::CancellationToken;

use super::{
    connection::{before, now_ms, stream_state, RedisBus, ANNOUNCE_LUA},
    live, reader, value,
};
use crate::{
    bus::{Broker, EntityState, Figures, Presence, Replay},
    cursor::Cursor,
    envelope::{encode_body, EventId, NewEvent},
    error::BusError,
    name::Channel,
    publish::{Guard, Guarded, Published},
    rules::{
        check_channels, check_entity, check_event, check_stream, entry_lost, gap_check, needs_probe, placed,
        resync_page, resynced, starts,
    },
    stats::BusStats,
    subscription::{Health, HealthTracker, Subscription},
};

impl Broker for RedisBus {
    async fn publish(&self, channel: &Channel, event: NewEvent) -> Result<Published, BusError> {
        Ok(self.publish_batch(vec![(channel.clone(), event)]).await?.remove(0))
    }

    async fn publish_batch(&self, events: Vec<(Channel, NewEvent)>) -> Result<Vec<Published>, BusError> {
        let events = placed(&self.inner.config, events)?;
        let total = events.len();
        let mut calls = self.calls(events);
        let mut out = vec![
            Published {
                id: EventId::ZERO,
                duplicate: false
            };
            total
        ];
        // Each channel's calls go through its lane (`commit`): one call in flight per channel,
        // publishes that arrive meanwhile share the next one; channels run concurrently, and
        // one caller's calls of one channel keep their order (the lane is first in, first out).
        let replies = futures::future::join_all(
            calls
                .iter_mut()
                .map(|c| self.commit(&c.channel, std::mem::take(&mut c.events))),
        )
        .await;
        for (call, reply) in calls.iter().zip(replies) {
            for (slot, r) in call.slots.iter().zip(reply?) {
                if r.duplicate {
                    self.inner.stats.duplicate();
                } else {
                    self.inner.stats.published(1);
                }
                out[*slot] = r;
            }
        }
        Ok(out)
    }

    async fn subscribe(&self, channels: &[Channel], from: Option<&Cursor>) -> Result<Subscription, BusError> {
        check_channels(&self.inner.config, channels)?;
        // Resolve "now" before returning, so every event stored after this call is delivered.
        let mut positions = Vec::with_capacity(channels.len());
        let mut resyncs = Vec::new();
        for (s, pos, changed) in starts(&self.inner.config, channels, from) {
            let pos = match pos {
                Some(pos) => pos,
                None => {
                    stream_state(&self.inner.client, &self.inner.keys.stream(&s))
                        .await?
                        .last_generated
                }
            };
            if changed {
                resyncs.push((s.clone(), pos));
            }
            positions.push((s, pos));
        }
        let (tx, rx) = resynced(&self.inner.config, &self.inner.stats, resyncs);
        let (health, health_rx) = HealthTracker::new();
        let stop = CancellationToken::new();
        let (follower, changes) = Subscription::changes(self.inner.config.channel_names());
        live::spawn(self.clone(), positions, tx, changes, health, stop.clone()).await?;
        Ok(Subscription::new(rx, health_rx, follower, stop))
    }

    async fn replay(&self, channel: &Channel, after: EventId, limit: usize) -> Result<Replay, BusError> {
        check_stream(&self.inner.config, channel)?;
        let key = self.inner.keys.stream(channel);
        let client = &self.inner.client;
        // Gap check first: an entry trimmed after the check is still caught by the next call's.
        let state = stream_state(client, &key).await?;
        if let Some(resume_from) = gap_check(after, &state) {
            let resync = resync_page(after, resume_from, &state, &self.inner.stats);
            return Ok(resync);
        }
        let limit = limit.max(1);
        // Where the gap rule needs the entry at `after` itself, the page starts there (one
        // more entry, the same round trip): missing, the store lost it (a failover).
        let probe = needs_probe(after, &state);
        let start = if probe { after.to_string() } else { format!("({after}") };
        let reply: Value = client
            .xrange(&key, start, "+", Some(limit as u64 + probe as u64))
            .await
            .map_err(BusError::redis("XRANGE"))?;
        let mut entries = value::entries(reply)?;
        if probe {
            let present = entries.first().is_some_and(|e| e.id == after);
            if entry_lost(after, &state, present) {
                let resume_from = before(client, &key, after).await?;
                return Ok(resync_page(after, resume_from, &state, &self.inner.stats));
            }
            entries.remove(0);
        }
        let mut page = Replay {
            last: entries.last().map_or(after, |e| e.id),
            at_head: entries.len() < limit,
            ..Replay::default()
        };
        for e in entries {
            match reader::classify(self, channel, e.id, e.body.as_deref()) {
                Ok(env) => page.events.push(Arc::new(env)),
                Err(kind) => page.malformed.push((e.id, kind)),
            }
        }
        Ok(page)
    }

    async fn published_with(&self, channel: &Channel, idempotency_key: &str) -> Result<Option<EventId>, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        // The key lives with its event: in one of the channel's partitions, if it has them.
        let mut v: Option<String> = None;
        for s in self.inner.config.streams_of(channel) {
            v = self
                .inner
                .client
                .get(self.inner.keys.dedupe(&s, idempotency_key))
                .await
                .map_err(BusError::redis("GET dedupe"))?;
            if v.is_some() {
                break;
            }
        }
        v.map(|id| {
            id.parse().map_err(|e| BusError::Protocol {
                context: "idempotency key",
                detail: format!("{e}"),
            })
        })
        .transpose()
    }

    async fn head(&self, channels: &[Channel]) -> Result<Cursor, BusError> {
        check_channels(&self.inner.config, channels)?;
        let mut cursor = Cursor::new();
        for c in &self.inner.config.streams(channels) {
            let state = stream_state(&self.inner.client, &self.inner.keys.stream(c)).await?;
            cursor.set(c.clone(), state.last_generated);
        }
        Ok(cursor)
    }

    fn health(&self) -> Health {
        if self.inner.client.is_connected() {
            Health::Up
        } else {
            Health::Down {
                since: std::time::SystemTime::now(),
                reason: "not connected to redis".into(),
            }
        }
    }

    fn stats(&self) -> &BusStats {
        &self.inner.stats
    }
}

impl Presence for RedisBus {
    async fn announce(&self, kind: &str, instance: &str, figures: &Figures, ttl: Duration) -> Result<(), BusError> {
        let (key, index) = self.presence_keys(kind, instance);
        let ttl_ms = ttl.as_millis().max(1) as i64;
        let mut args: Vec<Value> = vec![ttl_ms.into()];
        for (k, v) in figures {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        let client = &self.inner.client;
        client
            .eval::<Value, _, _, _>(ANNOUNCE_LUA, vec![key], args)
            .await
            .map_err(BusError::redis("announce"))?;
        let expires = now_ms() + ttl_ms;
        client
            .zadd::<Value, _, _>(&index, None, None, false, false, (expires as f64, instance))
            .await
            .map_err(BusError::redis("announce (index)"))?;
        Ok(())
    }

    async fn withdraw(&self, kind: &str, instance: &str) -> Result<(), BusError> {
        let (key, index) = self.presence_keys(kind, instance);
        let client = &self.inner.client;
        client
            .del::<Value, _>(&key)
            .await
            .map_err(BusError::redis("withdraw"))?;
        client
            .zrem::<Value, _, _>(&index, instance)
            .await
            .map_err(BusError::redis("withdraw (index)"))?;
        Ok(())
    }

    async fn roster(&self, kind: &str) -> Result<Vec<(String, Figures)>, BusError> {
        let (_, index) = self.presence_keys(kind, "");
        let client = &self.inner.client;
        let now = now_ms() as f64;
        // Forget instances that stopped announcing; their hashes expired by themselves.
        let _: Value = client
            .zremrangebyscore(&index, f64::NEG_INFINITY, now)
            .await
            .map_err(BusError::redis("roster (prune)"))?;
        let names: Vec<String> = client
            .zrangebyscore(&index, now, f64::INFINITY, false, None)
            .await
            .map_err(BusError::redis("roster"))?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let (key, _) = self.presence_keys(kind, &name);
            let figures: std::collections::HashMap<String, String> = client
                .hgetall(&key)
                .await
                .map_err(BusError::redis("roster (figures)"))?;
            if !figures.is_empty() {
                out.push((name, figures.into_iter().collect()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl EntityState for RedisBus {
    async fn publish_guarded(&self, channel: &Channel, event: NewEvent, guard: Guard) -> Result<Guarded, BusError> {
        // The entity's state and events live in its partition.
        let channel = &self.inner.config.place(channel, &guard.entity);
        check_event(&self.inner.config, channel, &event)?;
        let body = encode_body(channel, &event);
        self.guarded(channel, guard, Some(body), event.idempotency_key.as_deref())
            .await
    }

    async fn set_state(&self, channel: &Channel, guard: Guard) -> Result<Guarded, BusError> {
        let channel = &self.inner.config.place(channel, &guard.entity);
        let out = self.guarded(channel, guard, None, None).await?;
        Ok(match out {
            Guarded::Done(_) => {
                let state = stream_state(&self.inner.client, &self.inner.keys.stream(channel)).await?;
                Guarded::Done(Published {
                    id: state.last_generated,
                    duplicate: false,
                })
            }
            conflict => conflict,
        })
    }

    async fn state(&self, channel: &Channel, entity: &str) -> Result<Option<String>, BusError> {
        check_channels(&self.inner.config, std::slice::from_ref(channel))?;
        check_entity(entity)?;
        let channel = &self.inner.config.place(channel, entity);
        self.inner
            .client
            .get(self.inner.keys.state(channel, entity))
            .await
            .map_err(BusError::redis("GET state"))
    }
}
