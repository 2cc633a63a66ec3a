//! Group commit: publishes of one channel that arrive while its script call is in flight share
//! the next call.
//!
//! A publish that finds its channel idle runs its own call at once, in its own task: no hop and
//! no wait, so an unbatched publish costs what it did. Publishes that arrive meanwhile queue
//! behind it (in its lane, [`super::lane`]); when it ends, one task (spawned, so that no caller
//! going away can drop another caller's events) runs the queue, as calls of up to
//! [`EVENTS_PER_CALL`] events in arrival order, until it is empty. So under load each script
//! call, `XREVRANGE`, round trip and socket write serves several publishes, and one caller's
//! events stay contiguous and in order. Results are each caller's own: one id (or the first
//! id, for a duplicate) per event. The queue holds at most one entry per publish in flight, so
//! it is bounded by the requests the gateway serves at once.

use fred::types::Value;
use tokio::sync::oneshot;

use super::{
    connection::RedisBus,
    lane::{Prepared, Reply, Waiter, EVENTS_PER_CALL},
    value,
};
use crate::{error::BusError, name::Channel};

impl RedisBus {
    /// Stores `events` (at most [`EVENTS_PER_CALL`], all of `channel`) in one script call,
    /// now or, when a call of the channel is in flight, together with whatever else waits.
    pub(crate) async fn commit(&self, channel: &Channel, events: Vec<Prepared>) -> Reply {
        let waiting = {
            let mut lanes = self.inner.commits.lanes();
            let lane = match lanes.get_mut(channel) {
                Some(lane) => lane,
                None => lanes.entry(channel.clone()).or_default(),
            };
            if lane.busy {
                let (reply, rx) = oneshot::channel();
                lane.waiting.push_back(Waiter { events, reply });
                Err(rx)
            } else {
                lane.busy = true;
                Ok(events)
            }
        };
        match waiting {
            Ok(events) => {
                // Hands the lane on however this ends, the caller gone mid-call included.
                let _turn = Turn { bus: self, channel };
                self.call(channel, events).await
            }
            // Dropped unanswered only when the runtime is going away.
            Err(rx) => rx.await.unwrap_or(Err(BusError::Closed)),
        }
    }

    /// One script call for `events`, in order.
    async fn call(&self, channel: &Channel, events: Vec<Prepared>) -> Reply {
        let cfg = &self.inner.config;
        let n = events.len();
        let mut keys = vec![self.inner.keys.stream(channel)];
        let mut args: Vec<Value> = Vec::with_capacity(6 + 2 * n);
        args.push(self.inner.keys.live(channel).into());
        args.push(self.plain_announce(channel).into());
        args.push((cfg.retention.max_len as i64).into());
        args.push(((cfg.retention.max_age_secs * 1000) as i64).into());
        args.push((cfg.dedupe_window_secs as i64).into());
        args.push((cfg.partition_expiry(channel).as_millis() as i64).into());
        for e in events {
            let key_index = match e.dedupe {
                Some(k) => {
                    keys.push(k);
                    keys.len() as i64
                }
                None => 0,
            };
            args.push(key_index.into());
            args.push(e.body.into());
        }
        let reply = self.run_script(keys, args).await?;
        value::publish_reply(reply, n)
    }

    /// Runs the lane's queue until it is empty, then marks it idle.
    async fn drain(self, channel: Channel) {
        let mut turn = Drained {
            bus: &self,
            channel: &channel,
            done: false,
        };
        loop {
            let batch: Vec<Waiter> = {
                let mut lanes = self.inner.commits.lanes();
                let Some(lane) = lanes.get_mut(&channel) else {
                    turn.done = true;
                    return;
                };
                let mut total = 0;
                let mut batch = Vec::new();
                while let Some(w) = lane.waiting.front() {
                    if !batch.is_empty() && total + w.events.len() > EVENTS_PER_CALL {
                        break;
                    }
                    total += w.events.len();
                    batch.push(lane.waiting.pop_front().expect("just seen"));
                }
                if batch.is_empty() {
                    lane.busy = false;
                    forget_partition(&mut lanes, &channel);
                    turn.done = true;
                    return;
                }
                batch
            };
            let mut counts = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            let mut events = Vec::new();
            for w in batch {
                counts.push(w.events.len());
                replies.push(w.reply);
                events.extend(w.events);
            }
            match self.call(&channel, events).await {
                Ok(published) => {
                    let mut rest = published.into_iter();
                    for (reply, n) in replies.into_iter().zip(counts) {
                        // A caller that went away no longer needs its ids.
                        let _ = reply.send(Ok(rest.by_ref().take(n).collect()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.shared()));
                    }
                }
            }
        }
    }
}

/// An idle partition's lane goes: partitions are many and come and go (one per user).
fn forget_partition(lanes: &mut std::collections::HashMap<Channel, super::lane::Lane>, channel: &Channel) {
    if channel.is_partition() {
        lanes.remove(channel);
    }
}

/// The lane's first call, however it ends: the queue goes on in a task of its own, or the
/// lane is idle again.
struct Turn<'a> {
    bus: &'a RedisBus,
    channel: &'a Channel,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut lanes = self.bus.inner.commits.lanes();
        let Some(lane) = lanes.get_mut(self.channel) else {
            return;
        };
        if lane.waiting.is_empty() {
            lane.busy = false;
            forget_partition(&mut lanes, self.channel);
            return;
        }
        drop(lanes);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.bus.clone().drain(self.channel.clone()));
            }
            Err(_) => self.bus.idle(self.channel),
        }
    }
}

/// The queue's task, dropped before it is empty only when its runtime goes away: the waiters
/// left are answered `Closed` (their senders dropped) and the lane is idle again.
struct Drained<'a> {
    bus: &'a RedisBus,
    channel: &'a Channel,
    /// The queue ran empty and the lane was marked idle under its lock.
    done: bool,
}

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.bus.idle(self.channel);
        }
    }
}

impl RedisBus {
    /// Marks the lane idle and drops whoever still waits (they are answered `Closed`).
    fn idle(&self, channel: &Channel) {
        let mut lanes = self.inner.commits.lanes();
        if let Some(lane) = lanes.get_mut(channel) {
            lane.busy = false;
            lane.waiting.clear();
        }
    }
}
