//! What a stream counts of its deliveries, batch by batch, so the shared metrics (touched from
//! every edge thread) are touched once per batch, not once per delivery.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use prometheus::{local::LocalHistogram, Histogram};

use crate::hub::{event::HubEvent, transport::Transport};

/// How long an edge thread keeps delivery latencies before they reach the shared histogram,
/// at most (also every [`LATENCY_BATCH`] of them, and on the shard's flush tick).
pub(crate) const LATENCY_FLUSH_MS: u64 = 100;
/// Latencies an edge thread adds at once.
const LATENCY_BATCH: u32 = 512;

thread_local! {
    /// The delivery latencies this edge thread observed and has not added yet.
    static LATENCIES: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// An edge thread's latencies, for one histogram.
struct Pending {
    local: LocalHistogram,
    /// The histogram's address: only to tell two gateways in one process apart.
    of: usize,
    n: u32,
    since_ms: u64,
}

/// One delivery's latency (`seconds`, written at `now_ms`). An edge thread keeps its own tally
/// and adds it to the shared histogram every [`LATENCY_FLUSH_MS`] (the histogram is shared
/// by every edge thread: its atomics, hit per delivery, were a thirtieth of a fan-out's edge
/// time, and a stream's own batch of them was a heap allocation per wake). Elsewhere (a stream
/// served by hyper on the main runtime) it goes straight in.
pub(crate) fn observe(histogram: &Histogram, seconds: f64, now_ms: u64) {
    if !crate::edge::on_edge() {
        histogram.observe(seconds);
        return;
    }
    let of = histogram as *const Histogram as usize;
    LATENCIES.with_borrow_mut(|slot| {
        let pending = match slot {
            Some(p) if p.of == of => p,
            _ => {
                if let Some(p) = slot.take() {
                    p.local.flush();
                }
                slot.insert(Pending {
                    local: histogram.local(),
                    of,
                    n: 0,
                    since_ms: now_ms,
                })
            }
        };
        pending.local.observe(seconds);
        pending.n += 1;
        if pending.n >= LATENCY_BATCH || now_ms.saturating_sub(pending.since_ms) >= LATENCY_FLUSH_MS {
            pending.local.flush();
            pending.n = 0;
            pending.since_ms = now_ms;
        }
    });
}

/// Adds what this thread still keeps (the shard's flush tick, so a quiet thread's last
/// latencies arrive too).
pub(crate) fn flush_latencies() {
    LATENCIES.with_borrow_mut(|slot| {
        if let Some(p) = slot.as_mut().filter(|p| p.n > 0) {
            p.local.flush();
            p.n = 0;
        }
    });
}

/// Deliveries written and not yet added to `realtime_events_delivered_total`: a run of events
/// of one type is one add when the chunk is handed over (the counter is shared by every stream
/// on every edge thread, and touched per delivery it was a twentieth of a burst's CPU). The
/// connection's own `events_sent` is kept here too and stored once per chunk: only this stream
/// writes it, so a plain store does, and the connection's shared record is not read per
/// delivery (its atomic add, a cache miss per wake, was a tenth of a fan-out's edge time).
pub(crate) struct Counted {
    transport: Transport,
    last: Option<Arc<HubEvent>>,
    n: u64,
    /// Every event written to the connection so far.
    sent: u64,
    /// `sent` has moved since it was last stored.
    unstored: bool,
}

impl Counted {
    /// Nothing counted yet, on `transport`.
    pub(crate) fn new(transport: Transport) -> Self {
        Counted {
            transport,
            last: None,
            n: 0,
            sent: 0,
            unstored: false,
        }
    }

    /// One more delivery of `ev`.
    pub(crate) fn add(&mut self, ev: &Arc<HubEvent>) {
        self.sent += 1;
        self.unstored = true;
        if let Some(last) = &self.last {
            // Same type, same transport: the same counter.
            if Arc::ptr_eq(last, ev) || last.env.event_type == ev.env.event_type {
                self.n += 1;
                return;
            }
        }
        self.flush_delivered();
        self.last = Some(ev.clone());
        self.n = 1;
    }

    /// Adds what is counted here, and stores the connection's total in `events_sent`.
    pub(crate) fn flush(&mut self, events_sent: &AtomicU64) {
        self.flush_delivered();
        if std::mem::take(&mut self.unstored) {
            events_sent.store(self.sent, Ordering::Relaxed);
        }
    }

    fn flush_delivered(&mut self) {
        if let Some(last) = self.last.take() {
            last.delivered[self.transport as usize].inc_by(std::mem::take(&mut self.n));
        }
    }
}
