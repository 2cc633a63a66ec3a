//! The live phase of a stream: it waits on its queue (which also brings the hub's signals:
//! heartbeat, drain, latest-wins, behind, stop) and on its one timer.

use std::{collections::VecDeque, pin::Pin, time::Duration, time::Instant};

use super::{jitter, Phase, Stream, BATCH};
use crate::{
    hub::{
        event::Item,
        queue::{Receiver, Signals, Woke},
    },
    stream::frame::{Chunk, Encoder, Ended, Frame},
};

impl<E: Encoder> Stream<E> {
    /// One wait of the live phase: the next chunk, or `None` when the phase changed or there
    /// is nothing to write yet. The stream waits on its queue, which also brings the hub's
    /// signals (heartbeat, drain, latest-wins, stop), and on its one timer.
    pub(super) async fn live(&mut self) -> Option<Chunk> {
        let next = [self.drain_at, self.expires, self.coalescer.next_due()]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            biased;
            _ = wait_until(&mut self.timer, next), if next.is_some() => self.deadlines(),
            woke = next_items(&self.reg.rx, &mut self.taken) => self.woke(woke),
        }
        (!self.out.is_empty()).then(|| self.out.take())
    }

    /// The timer fired: what is due, in order of precedence.
    fn deadlines(&mut self) {
        let now = Instant::now();
        if self.drain_at.is_some_and(|d| d <= now) {
            self.phase = Phase::Closing(self.drain_end);
        } else if self.expires.is_some_and(|e| e <= now) {
            self.write_expired();
            self.phase = Phase::Closing(Ended::TokenExpired);
        } else if self.coalescer.next_due().is_some_and(|d| d <= now) {
            self.coalescer.flush_due(now, &mut self.outs);
            self.write_outs();
        }
    }

    /// The queue woke the stream: items, signals, or the end of the queue.
    fn woke(&mut self, woke: Woke) {
        if woke.items {
            self.write_taken();
        }
        let s = woke.signals;
        // The drain: streams leave one by one over the spread, each served until its turn, so
        // no client waits without a stream and the others do not come back in one wave.
        if s.has(Signals::DRAIN) && (self.drain_at.is_none() || self.drain_end != Ended::Draining) {
            let spread = self.state.config().drain_retry_spread_ms;
            self.drain_at = Some(Instant::now() + Duration::from_millis(jitter(spread)));
            self.drain_end = Ended::Draining;
        } else if s.has(Signals::SHED) && self.drain_at.is_none() {
            // Shed as on a drain: at a random point of the spread, so the streams shed together
            // do not come back in one wave.
            let spread = self.state.config().drain_retry_spread_ms;
            self.drain_at = Some(Instant::now() + Duration::from_millis(jitter(spread)));
            self.drain_end = Ended::Rebalancing;
        }
        if s.has(Signals::COLLAPSED) {
            self.write_collapsed_if_due();
        }
        if s.has(Signals::BEHIND) {
            self.fell_behind();
        }
        if s.has(Signals::HEARTBEAT) {
            self.out.encode(Frame::Heartbeat);
        }
        if s.has(Signals::STOP) {
            self.phase = Phase::Closing(Ended::Stopping);
        } else if woke.closed {
            let cut = self.reg.info.cut.load(std::sync::atomic::Ordering::Relaxed);
            self.phase = Phase::Closing(if cut { Ended::TooSlow } else { Ended::Closed });
        }
    }
}

/// Waits until `at` (forever without one) on `timer`, armed or moved there only when needed.
async fn wait_until(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>, at: Option<Instant>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    let at = tokio::time::Instant::from_std(at);
    match timer {
        Some(t) if t.deadline() == at && !t.is_elapsed() => {}
        Some(t) => t.as_mut().reset(at),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
    }
    if let Some(t) = timer {
        t.as_mut().await;
    }
}

/// Items to write: those taken and not written yet, else the next ones from the queue (false
/// once the hub closed it).
async fn next_items(rx: &Receiver, taken: &mut VecDeque<Item>) -> Woke {
    if !taken.is_empty() {
        return Woke {
            items: true,
            closed: false,
            signals: Signals::default(),
        };
    }
    rx.take(taken, BATCH).await
}
