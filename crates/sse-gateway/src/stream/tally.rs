//! What a stream counts of its deliveries, batch by batch, so the shared metrics (touched from
//! every edge thread) are touched once per batch, not once per delivery.

use std::sync::Arc;

use crate::hub::{event::HubEvent, transport::Transport};

/// A batch's delivery latencies: the first goes straight to the histogram; from the second on
/// they are summed locally and added at the batch's end (the shared histogram's atomics,
/// touched from every edge thread, were an eighth of a burst's CPU when hit per delivery).
pub(crate) enum Latency {
    /// Nothing observed in this batch.
    Idle,
    /// One observed, directly.
    One,
    /// Several: the rest here until the batch ends (only the stream touches it, through
    /// `&mut`, so the wrapper makes it shareable without a lock).
    Local(Box<sync_wrapper::SyncWrapper<prometheus::local::LocalHistogram>>),
}

/// Deliveries written and not yet added to `realtime_events_delivered_total`: a run of events
/// of one type is one add when the chunk is handed over (the counter is shared by every stream
/// on every edge thread, and touched per delivery it was a twentieth of a burst's CPU).
#[derive(Default)]
pub(crate) struct Counted {
    last: Option<Arc<HubEvent>>,
    n: u64,
}

impl Counted {
    /// One more delivery of `ev` over `transport`.
    pub(crate) fn add(&mut self, ev: &Arc<HubEvent>, transport: Transport) {
        if let Some(last) = &self.last {
            // Same type, same transport: the same counter.
            if Arc::ptr_eq(last, ev) || last.env.event_type == ev.env.event_type {
                self.n += 1;
                return;
            }
        }
        self.flush(transport);
        self.last = Some(ev.clone());
        self.n = 1;
    }

    /// Adds what is counted here.
    pub(crate) fn flush(&mut self, transport: Transport) {
        if let Some(last) = self.last.take() {
            last.delivered[transport as usize].inc_by(std::mem::take(&mut self.n));
        }
    }
}
