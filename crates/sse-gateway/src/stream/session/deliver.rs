//! What a stream writes: replayed pages, live items (after the seam check, through the
//! coalescer), groups, RESYNC, the unread snapshot, the expiry notice; each as a typed
//! [`Frame`] for the transport's encoder, and counted.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use event_bus::{Broker, Channel, EventId};

use super::{Phase, Stream, BATCH, BATCH_BYTES};
use crate::{
    hub::event::{HubEvent, Item, Span},
    stream::{
        coalesce::Out,
        frame::{Encoder, Ended, Frame},
        tally,
    },
};

/// Events read from the bus per replay page.
const REPLAY_PAGE: usize = 500;

const TOKEN_EXPIRED: &[u8] =
    b"{\"type\":\"TOKEN_EXPIRED\",\"message\":\"the token expired: reconnect with a fresh one and your Last-Event-ID\"}";

impl<E: Encoder> Stream<E> {
    /// The last message of a stream whose token expired: `{"type": "TOKEN_EXPIRED", ...}`,
    /// with no cursor, so the client resumes from its last event with a fresh token.
    pub(crate) fn write_expired(&mut self) {
        self.out.encode(Frame::Message {
            cursor: None,
            event: "TOKEN_EXPIRED",
            data: TOKEN_EXPIRED,
        });
    }

    /// A message of `event` with JSON `data` and the cursor as it is now.
    fn write_message(&mut self, event: &str, data: &[u8]) {
        self.text.clear();
        self.cursor.write_text(&mut self.text);
        self.out.encode(Frame::Message {
            cursor: Some(&self.text),
            event,
            data,
        });
    }

    /// The user's unread notifications, newest first, as one `NOTIFICATION_UNREAD` message.
    ///
    /// Cancel-safe like the rest of [`Stream::next_chunk`] (the WebSocket races it against the
    /// socket): nothing changes until the store has answered.
    pub(crate) async fn write_snapshot(&mut self) -> Result<(), Ended> {
        let (Some(n), Some(p)) = (self.state.notifications(), self.filter.private.clone()) else {
            self.snapshot_due = false;
            return Ok(());
        };
        let read = Box::pin(n.snapshot(&p.user)).await;
        self.snapshot_due = false;
        let (unread, list) = match read {
            Ok(s) => s,
            Err(e) => {
                if self.retry.is_none() {
                    tracing::warn!(conn = self.reg.info.id, error = %e, "unread notifications unavailable; trying again");
                }
                return Err(Ended::Upstream);
            }
        };
        self.snapshot_ids = list.iter().map(|n| n.stored.id.clone()).collect();
        let message = serde_json::json!({
            "type": notifications::NOTIFICATION_UNREAD,
            "channel": p.channel.logical(),
            "user_id": p.user,
            "unread": unread,
            "notifications": list,
            "timestamp": event_bus::Timestamp::now(),
        });
        self.write_message(notifications::NOTIFICATION_UNREAD, message.to_string().as_bytes());
        Ok(())
    }

    /// Whether `ev` is a notification the snapshot already had (then it is not sent again).
    fn in_snapshot(&mut self, ev: &HubEvent) -> bool {
        !self.snapshot_ids.is_empty()
            && self
                .filter
                .private
                .as_ref()
                .is_some_and(|p| p.channel == ev.env.channel)
            && ev.env.event_type.as_str() == notifications::NOTIFICATION
            && self.snapshot_ids.remove(&ev.env.payload.id)
    }

    /// The hub stopped queueing for this stream: its queue was full (a burst faster than it
    /// writes). What it missed is read from the store in place, from where it stands in each
    /// channel, and then the hub queues for it again: the seam is the one of a resume (by id,
    /// per channel), so every event arrives once and in order, and a RESYNC comes only if the
    /// store no longer has them. What it had taken from the queue is older than the gap: a
    /// part not written yet is written by the replay, and skipped after it.
    pub(crate) fn fell_behind(&mut self) {
        for c in &self.filter.channels {
            if !self.pending.contains(c) {
                self.replay_pos
                    .set(c.clone(), self.seen.get(c).unwrap_or(EventId::ZERO));
                self.pending.push(c.clone());
            }
        }
        // Queued again from here: what is announced from now on is in the queue, what came
        // before in the store the replay reads after this.
        self.reg.info.behind.store(false, std::sync::atomic::Ordering::Relaxed);
        self.phase = Phase::CatchUp;
    }

    /// Replays one page of the first pending channel.
    pub(crate) async fn catch_up_page(&mut self) -> Result<(), Ended> {
        let Some(channel) = self.pending.first().cloned() else {
            return Ok(());
        };
        let after = self.replay_pos.get(&channel).unwrap_or(EventId::ZERO);
        // Boxed: the replay future (a Redis round trip) would otherwise size every stream's
        // state machine, live or not.
        let page = match Box::pin(self.state.bus().replay(&channel, after, REPLAY_PAGE)).await {
            Ok(p) => p,
            Err(e) => {
                if self.retry.is_none() {
                    tracing::warn!(conn = self.reg.info.id, error = %e, "replay failed; trying again");
                }
                return Err(Ended::Upstream);
            }
        };
        if let Some(resume_from) = page.resync {
            self.replay_pos.set(channel.clone(), resume_from);
            self.write_item(Item::Resync(Box::new((channel.clone(), resume_from))));
        }
        let at_head = page.at_head;
        if page.resync.is_none() {
            self.replay_pos.advance(&channel, page.last);
        }
        for env in page.events {
            self.replay_pos.advance(&channel, env.id);
            if self.filter.wants(&env) {
                let ev = Arc::new(HubEvent::new(env, self.state.metrics()));
                self.write_item(Item::Event(ev));
            }
        }
        // After a RESYNC the replay goes on from where the store can: what came after it
        // (written after a failover, before this stream joined the hub) is not skipped.
        if at_head && page.resync.is_none() {
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Takes one item from the replay or the hub.
    pub(crate) fn write_item(&mut self, item: Item) {
        let now = self.now().0;
        match item {
            Item::Event(ev) => {
                // Covered by the replay already, or from before this connection's start.
                if !self.seen.advance_past(&ev.env.channel, ev.env.id) {
                    return;
                }
                if self.in_snapshot(&ev) {
                    // Delivered by the snapshot: the cursor passes it.
                    self.cursor.advance(&ev.env.channel, ev.env.id);
                    return;
                }
                self.coalescer.offer(ev, now, &mut self.outs);
                self.write_outs();
            }
            Item::Resync(r) => {
                let (channel, resume_from) = *r;
                self.coalescer.flush_channel(&channel, now, &mut self.outs);
                self.write_outs();
                self.seen.set(channel.clone(), resume_from);
                self.write_resync(&channel, resume_from);
                // Notifications may be gone with the events: the unread ones again.
                if self.filter.private.as_ref().is_some_and(|p| p.channel == channel) {
                    self.snapshot_due = true;
                }
            }
            Item::Presence(p) => self.write_message("PRESENCE", &p.1),
            Item::Span(span) if self.takes_whole(&span) => self.write_span(&span),
            Item::Span(span) => {
                for ev in &span.events {
                    self.write_item(Item::Event(ev.clone()));
                }
            }
        }
    }

    /// Whether a span goes out as the shard encoded it: every event of it is new to this
    /// stream, each goes out alone (no grouping), and the cursor after each is the channel's
    /// position alone (the stream follows nothing else, so its cursor has nothing else).
    fn takes_whole(&self, span: &Span) -> bool {
        self.coalescer.sends_each()
            && self.snapshot_ids.is_empty()
            && self.seen.get(&span.channel).is_none_or(|at| at < span.first())
            && self.cursor.iter().all(|(c, _)| *c == span.channel)
    }

    /// A span as the shard encoded it: its bytes shared, nothing looked at per event but the
    /// tally.
    fn write_span(&mut self, span: &Span) {
        let bytes = span.frames(&self.out);
        self.out.put_shared(bytes);
        let last = span.last();
        self.seen.set(span.channel.clone(), last);
        self.cursor.set(span.channel.clone(), last);
        self.sent.add(span.events.len() as u64);
        let now = self.now().1;
        let histogram = &self.state.metrics().delivery_latency;
        tally::delivered_runs(span.runs(), self.transport, histogram, now);
    }

    /// Writes what was taken from the hub's queue, up to [`BATCH_BYTES`] (the rest goes in the
    /// next chunk); once all of it is written and the queue is empty, what was put aside
    /// latest-wins (newer than the queue) follows.
    pub(crate) fn write_taken(&mut self) {
        // Several frames pending: one write, its room made once, before the first frame: about
        // the first frame's size for each, and two frames more, so that the frame crossing
        // BATCH_BYTES still fits (growing the buffer copied all of it, and a full one into
        // fresh pages past malloc's mmap threshold).
        if let (n @ 2.., Some(first)) = (self.taken.len(), self.taken.front()) {
            let each = first.size_hint();
            self.out.reserve((each * n).min(BATCH_BYTES) + 2 * each);
        }
        while self.out.len() < BATCH_BYTES {
            let Some(item) = self.taken.pop_front() else {
                break;
            };
            self.write_item(item);
        }
        if self.taken.is_empty() {
            // A burst's queue is not kept by the stream after it.
            if self.taken.capacity() > BATCH {
                self.taken = VecDeque::new();
            }
            self.write_collapsed_if_due();
        }
    }

    /// What was put aside latest-wins, once nothing older is left to write: it is newer than
    /// everything queued (the queue is looked at only when something is put aside).
    pub(crate) fn write_collapsed_if_due(&mut self) {
        if self.taken.is_empty() && self.reg.collapsed.is_active() && self.reg.rx.is_empty() {
            // Oldest first.
            for ev in self.reg.collapsed.take() {
                self.write_item(Item::Event(ev));
            }
        }
    }

    /// What the coalescer let out, tallied together (one look at the thread's tally).
    pub(crate) fn write_outs(&mut self) {
        let outs = std::mem::take(&mut self.outs);
        let mut n = 0;
        for out in &outs {
            n += match out {
                Out::Single(ev) => {
                    self.write_event(ev);
                    1
                }
                Out::Group(events) => {
                    self.write_group(events);
                    events.len() as u64
                }
            };
        }
        if n > 0 {
            self.sent.add(n);
            let now = self.now().1;
            let histogram = &self.state.metrics().delivery_latency;
            tally::delivered(&outs, self.transport, histogram, now);
        }
        self.outs = outs;
        self.outs.clear();
    }

    fn write_event(&mut self, ev: &Arc<HubEvent>) {
        self.cursor.advance(&ev.env.channel, ev.env.id);
        let cursor = ev.cursor_text(&self.cursor, &mut self.text);
        self.out.encode(Frame::Message {
            cursor: Some(cursor),
            event: ev.env.event_type.as_str(),
            data: &ev.json,
        });
    }

    /// Two or more events of one channel and type as one message (`docs/reference.md`,
    /// "Grouping"): the type, the count, the payloads in order, and the id and time of the
    /// last; the cursor passes all.
    fn write_group(&mut self, events: &[Arc<HubEvent>]) {
        let last = events.last().expect("a group has events");
        for ev in events {
            self.cursor.advance(&ev.env.channel, ev.env.id);
        }
        let payloads: Vec<&event_bus::Payload> = events.iter().map(|e| &e.env.payload).collect();
        let message = serde_json::json!({
            "id": last.env.id,
            "type": last.env.event_type,
            "channel": last.env.channel.logical(),
            "count": events.len(),
            "payloads": payloads,
            "timestamp": last.env.timestamp,
        });
        self.write_message(last.env.event_type.as_str(), message.to_string().as_bytes());
        self.state.metrics().groups_coalesced.inc();
    }

    fn write_resync(&mut self, channel: &Channel, resume_from: EventId) {
        self.cursor.set(channel.clone(), resume_from);
        self.state.metrics().resyncs.inc();
        let data = format!(
            "{{\"type\":\"RESYNC\",\"channel\":\"{}\",\"resume_from\":\"{resume_from}\"}}",
            channel.logical()
        );
        self.write_message("RESYNC", data.as_bytes());
    }
}

impl<E> Stream<E> {
    /// Now, as an instant and in Unix ms: read once per batch of items (`Stream::live`), not
    /// once per item.
    pub(crate) fn now(&mut self) -> (Instant, u64) {
        *self.clock.get_or_insert_with(clock)
    }
}

thread_local! {
    /// An instant and the Unix ms it was, read together at most a second ago on this thread.
    static WALL: std::cell::Cell<Option<(Instant, u64)>> = const { std::cell::Cell::new(None) };
}

/// Now: the monotonic clock read, the Unix ms derived from the last pair read on this thread
/// within a second (one clock read per batch instead of two; the wall clock's drift from the
/// monotonic one over a second is far under a millisecond).
fn clock() -> (Instant, u64) {
    let now = Instant::now();
    if let Some((at, ms)) = WALL.get() {
        let since = now.duration_since(at);
        if since < std::time::Duration::from_secs(1) {
            return (now, ms + since.as_millis() as u64);
        }
    }
    let ms = event_bus::Timestamp::now_ms();
    WALL.set(Some((now, ms)));
    (now, ms)
}
