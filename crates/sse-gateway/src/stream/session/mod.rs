//! One open stream: a state machine that starts (SSE's `retry:`), catches up from the bus page
//! by page when the client resumes, then follows the hub live, and ends saying why.
//!
//! The seam between replay and live: the stream registered with the hub before it read the
//! bus, so events the hub queued meanwhile are skipped if the replay already covered them (per
//! channel, by id). Nothing is lost or repeated. Each message carries the cursor after it.

mod deliver;
mod live;

use std::{
    collections::{HashSet, VecDeque},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use event_bus::{Channel, Cursor, EventId};
use tokio_util::sync::CancellationToken;

use super::{
    coalesce::{Coalescer, Out},
    frame::{Chunk, Encoder, Ended, Frame},
    tally::Sent,
};
use crate::{
    app::AppState,
    hub::{event::Item, filter::Filter, registry::Registration},
    telemetry::transport::Transport,
};

/// Items taken from the hub's queue at once, at most...
pub(crate) const BATCH: usize = 1024;
/// ... and the bytes a chunk reaches before it is written (a burst leaves in writes of this
/// size, as the floor's do, instead of one per event).
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// A drained stream's `retry:` is a random share of this, in ms: its end is already spread
/// over `drain_retry_spread_ms`, so it comes back at once.
const DRAIN_RECONNECT_MS: u64 = 50;

/// A failed bus read (a replay page, the unread snapshot) is tried again while the backplane
/// comes back, the stream held open, for this long at most; then the stream ends.
pub(crate) const UPSTREAM_WAIT: Duration = Duration::from_secs(10);

/// The longest pause between two tries of a failed bus read.
pub(crate) const UPSTREAM_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A bus read that failed, tried again after a pause.
pub(crate) struct Retry {
    give_up: Instant,
    next: Instant,
    backoff: Duration,
}

/// Where a stream is in its life.
pub(crate) enum Phase {
    /// Not a byte written yet.
    Start,
    /// Replaying what the client missed.
    CatchUp,
    /// Following the hub.
    Live,
    /// Ending, for this reason.
    Closing(Ended),
    /// Ended.
    Done,
}

/// One open stream: where it stands, and what it still has to write.
pub struct Stream<E> {
    pub(crate) state: AppState,
    /// When the token expires: the stream ends then, saying so.
    pub(crate) expires: Option<Instant>,
    pub(crate) reg: Registration,
    pub(crate) filter: Arc<Filter>,
    /// The position written with messages: past every event written, never past a held one.
    pub(crate) cursor: Cursor,
    /// Past every event taken in (written or held): the replay/live seam is checked on it.
    pub(crate) seen: Cursor,
    /// Where the replay of each pending channel has read to (filtered-out events included).
    pub(crate) replay_pos: Cursor,
    pub(crate) coalescer: Coalescer,
    pub(crate) outs: Vec<Out>,
    /// Channels still to replay from the bus.
    pub(crate) pending: Vec<Channel>,
    pub(crate) phase: Phase,
    pub(crate) draining: CancellationToken,
    /// The next of the drain's turn, the token's expiry and a held group's due time, armed
    /// while there is one (one timer, kept: not one registered per wake).
    pub(crate) timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The transport's encoder: what was written since the last chunk.
    pub(crate) out: E,
    /// The unread notifications are still to be sent (a stream that does not resume the
    /// private channel, or one whose position there is gone).
    pub(crate) snapshot_due: bool,
    /// Notification ids the snapshot had: their live copies are dropped.
    pub(crate) snapshot_ids: HashSet<String>,
    /// Once the server drains: when this stream ends (a random point of the spread).
    pub(crate) drain_at: Option<Instant>,
    /// How the stream ends at `drain_at`: drained, or shed (rebalancing).
    pub(crate) drain_end: Ended,
    /// Why the stream ended, once it has.
    pub(crate) ended: Option<Ended>,
    /// A bus read failed: when to try again, and when to give up.
    pub(crate) retry: Option<Retry>,
    /// Where a cursor's text is written when it is not shared (`HubEvent::cursor_text`).
    pub(crate) text: Vec<u8>,
    /// The time of the batch being written ([`Stream::now`]); `None` between batches.
    pub(crate) clock: Option<(Instant, u64)>,
    /// SSE or WebSocket (as the connection's record says; kept here, read per delivery).
    pub(crate) transport: Transport,
    /// The events written, for the connection's `events_sent`.
    pub(crate) sent: Sent,
    /// Taken from the hub's queue, not written yet (a chunk ends at [`BATCH_BYTES`]).
    pub(crate) taken: VecDeque<Item>,
}

/// What [`Stream::new`] starts from (`super::open` works it out).
pub(crate) struct Start {
    /// The stream's place in the hub.
    pub(crate) reg: Registration,
    pub(crate) filter: Arc<Filter>,
    /// Where the client is: the hub's head, and its resume position where it gave one.
    pub(crate) cursor: Cursor,
    /// The channels to replay from there.
    pub(crate) pending: Vec<Channel>,
    /// The channels whose partitions changed since the cursor was written: a RESYNC each.
    pub(crate) resyncs: Vec<Channel>,
    /// The unread notifications are to be sent first.
    pub(crate) snapshot_due: bool,
    /// When the token expires.
    pub(crate) expires: Option<Instant>,
    pub(crate) transport: Transport,
}

impl<E> Stream<E> {
    /// A stream that starts from `start` and writes through `out`.
    pub(crate) fn new(state: &AppState, start: Start, out: E) -> Self {
        let window = Duration::from_millis(state.config().debounce_window_ms);
        Stream {
            state: state.clone(),
            expires: start.expires,
            timer: None,
            draining: state.draining().clone(),
            reg: start.reg,
            filter: start.filter,
            seen: start.cursor.clone(),
            // Only a resuming stream replays; a channel to resync reads from past any id.
            replay_pos: if start.pending.is_empty() {
                Cursor::new()
            } else {
                let mut at = start.cursor.clone();
                for c in start.resyncs {
                    at.set(c, EventId::new(u64::MAX, u64::MAX));
                }
                at
            },
            cursor: start.cursor,
            coalescer: Coalescer::new(window, state.config().max_group),
            outs: Vec::new(),
            pending: start.pending,
            phase: Phase::Start,
            out,
            snapshot_due: start.snapshot_due,
            snapshot_ids: HashSet::new(),
            drain_at: None,
            drain_end: Ended::Draining,
            ended: None,
            retry: None,
            text: Vec::new(),
            clock: None,
            taken: Default::default(),
            transport: start.transport,
            sent: Default::default(),
        }
    }
}

impl<E> std::fmt::Debug for Stream<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("conn", &self.reg.info.id)
            .field("cursor", &self.cursor.to_string())
            .finish_non_exhaustive()
    }
}

impl<E: Encoder> Stream<E> {
    /// Why the stream ended, once `next_chunk` returned `None`.
    pub fn ended(&self) -> Option<Ended> {
        self.ended
    }

    /// The channels the stream follows (the private one included).
    pub fn channels(&self) -> &[Channel] {
        &self.filter.channels
    }

    /// Completes once the hub has cut the stream (its client did not keep up): a transport
    /// stuck writing closes then instead of waiting out its write deadline.
    pub async fn cut(&self) {
        let info = &self.reg.info;
        if !info.cut.load(std::sync::atomic::Ordering::Relaxed) {
            info.cut_signal.notified().await;
        }
    }

    /// The cursor past every event written so far.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The next chunk to write; `None` when the stream has ended. Cancel-safe: a call dropped
    /// at an await loses nothing (every await either completes before state changes, or is a
    /// cancel-safe receive).
    pub async fn next_chunk(&mut self) -> Option<Chunk> {
        let chunk = self.next_unsent().await;
        self.sent.store(&self.reg.info.events_sent);
        chunk
    }

    async fn next_unsent(&mut self) -> Option<Chunk> {
        loop {
            self.clock = None;
            if self.snapshot_due && matches!(self.phase, Phase::CatchUp | Phase::Live) {
                if !self.pause().await {
                    continue;
                }
                let read = self.write_snapshot().await;
                if !self.settled(read) {
                    continue;
                }
                if !self.out.is_empty() {
                    return Some(self.out.take());
                }
            }
            match self.phase {
                Phase::Start => {
                    self.phase = if self.pending.is_empty() {
                        Phase::Live
                    } else {
                        Phase::CatchUp
                    };
                    // Between half and all of `retry_ms`, different per stream: the clients
                    // of a crashed instance do not come back in one wave.
                    let retry = self.state.config().retry_ms;
                    self.out.encode(Frame::Open {
                        retry_ms: retry / 2 + jitter(retry - retry / 2),
                        conn: self.reg.info.id,
                    });
                    if !self.out.is_empty() {
                        return Some(self.out.take());
                    }
                }
                Phase::CatchUp if self.expires.is_some_and(|e| e <= Instant::now()) => {
                    self.write_expired();
                    self.phase = Phase::Closing(Ended::TokenExpired);
                }
                Phase::CatchUp => {
                    // A page at a time in turn with the thread's other streams (writes do not yield).
                    tokio::task::yield_now().await;
                    if !self.pause().await {
                        continue;
                    }
                    let read = self.catch_up_page().await;
                    if !self.settled(read) {
                        continue;
                    }
                    if self.pending.is_empty() {
                        self.phase = Phase::Live;
                    }
                    if !self.out.is_empty() {
                        return Some(self.out.take());
                    }
                }
                Phase::Live => {
                    if let Some(chunk) = self.live().await {
                        return Some(chunk);
                    }
                }
                Phase::Closing(reason) => {
                    self.phase = Phase::Done;
                    self.ended = Some(reason);
                    // Whatever is held goes out before the stream ends.
                    self.coalescer.flush_all(Instant::now(), &mut self.outs);
                    self.write_outs();
                    let config = self.state.config();
                    // A drained stream was served until its turn: it comes back at once (to
                    // another instance; the draining one no longer accepts).
                    let retry_ms = match reason {
                        Ended::Draining | Ended::Rebalancing => jitter(DRAIN_RECONNECT_MS),
                        _ => config.retry_ms + jitter(config.drain_retry_spread_ms),
                    };
                    self.out.encode(Frame::End { reason, retry_ms });
                    return Some(self.out.take());
                }
                Phase::Done => return None,
            }
        }
    }

    /// After a bus read (the unread snapshot, a catch-up page): true when it went through (a
    /// retry is over); on a failure false, and the read is tried again after a pause, or the
    /// stream closes with `read`'s reason once [`UPSTREAM_WAIT`] is over.
    fn settled(&mut self, read: Result<(), Ended>) -> bool {
        match read {
            Ok(()) => {
                self.retry = None;
                true
            }
            Err(reason) => {
                if !self.failed() {
                    self.phase = Phase::Closing(reason);
                }
                false
            }
        }
    }

    /// A bus read failed: true to try again after a pause, false once [`UPSTREAM_WAIT`] is
    /// over (the stream ends then).
    fn failed(&mut self) -> bool {
        let now = Instant::now();
        let r = self.retry.get_or_insert(Retry {
            give_up: now + UPSTREAM_WAIT,
            next: now,
            backoff: Duration::from_millis(100),
        });
        if now >= r.give_up {
            return false;
        }
        r.next = now + r.backoff;
        r.backoff = (r.backoff * 2).min(UPSTREAM_BACKOFF_MAX);
        true
    }

    /// Waits out the pause before the next try of a failed bus read (none without a failure);
    /// false when the stream is to end instead: the server drains, or the token expired.
    /// Cancel-safe: the pause's end is in the state.
    async fn pause(&mut self) -> bool {
        let Some(next) = self.retry.as_ref().map(|r| r.next) else {
            return true;
        };
        let expires = self.expires;
        tokio::select! {
            biased;
            _ = self.draining.cancelled() => self.phase = Phase::Closing(Ended::Draining),
            _ = tokio::time::sleep_until(expires.unwrap_or_else(Instant::now).into()), if expires.is_some() => {
                self.write_expired();
                self.phase = Phase::Closing(Ended::TokenExpired);
            }
            _ = tokio::time::sleep_until(next.into()) => return true,
        }
        self.retry = None;
        false
    }
}

/// A share of `spread` ms, different for each call, so clients do not come back in one wave.
fn jitter(spread: u64) -> u64 {
    if spread == 0 {
        return 0;
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos() as u64;
    let mut x = nanos ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % spread
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_spread() {
        assert_eq!(jitter(0), 0);
        for _ in 0..1000 {
            assert!(jitter(5000) < 5000);
        }
    }
}
