//! What a stream counts of its deliveries. The shared metrics are touched from every edge
//! thread: hit per delivery, their atomics bounced between the CPUs (the latency histogram was
//! an eighth of a burst's CPU, the delivered counter a twentieth). So each edge thread keeps
//! its own tally and adds it to them every [`FLUSH_MS`] (sooner after [`FLUSH_AFTER`]
//! deliveries; the thread's flusher, started with its first tally, adds what a quiet thread
//! still keeps, and while there is nothing it waits without waking the thread). A stream served
//! elsewhere (by hyper, on the main runtime) adds each delivery straight away.

use std::{
    cell::RefCell,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    task::{Poll, Waker},
};

use prometheus::{local::LocalHistogram, Histogram, IntCounter};

use super::coalesce::Out;
use crate::{hub::event::HubEvent, telemetry::transport::Transport};

/// How long an edge thread keeps its tally before the shared metrics have it, at most.
pub(crate) const FLUSH_MS: u64 = 100;
/// Deliveries an edge thread tallies before it adds them at once.
const FLUSH_AFTER: u32 = 512;

thread_local! {
    /// What this edge thread delivered and has not added yet.
    static TALLY: RefCell<Tally> = const { RefCell::new(Tally { latency: None, runs: Vec::new(), n: 0, since_ms: 0 }) };
    /// The thread's flusher, waiting for this thread to start a tally ([`pending`]).
    static FLUSHER: RefCell<Option<Waker>> = const { RefCell::new(None) };
    /// Whether the thread's flusher runs ([`flusher`]).
    static FLUSHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An edge thread's deliveries not yet in the shared metrics.
struct Tally {
    /// The latencies, for one gateway's histogram.
    latency: Option<Latencies>,
    /// Deliveries per counter (one per event type and transport: a handful).
    runs: Vec<Run>,
    /// Deliveries tallied since the last flush.
    n: u32,
    /// When the last flush was (ms on the batch clock).
    since_ms: u64,
}

struct Latencies {
    local: LocalHistogram,
    /// The histogram's address: only to tell two gateways in one process apart.
    of: usize,
}

/// Deliveries counted for one `realtime_events_delivered_total` child.
struct Run {
    event_type: event_bus::EventType,
    transport: Transport,
    /// The metrics' address (two gateways in one process each have theirs).
    of: usize,
    counter: IntCounter,
    n: u64,
}

impl Tally {
    fn flush(&mut self) {
        // The counters first: a reader that sees the latency sees the delivery counted.
        for run in self.runs.iter_mut().filter(|r| r.n > 0) {
            run.counter.inc_by(std::mem::take(&mut run.n));
        }
        if let Some(l) = &self.latency {
            l.local.flush();
        }
        self.n = 0;
    }
}

/// The deliveries of `outs` over `transport`, written at `now_ms` (`histogram`: the gateway's
/// delivery latencies).
pub(crate) fn delivered(outs: &[Out], transport: Transport, histogram: &Histogram, now_ms: u64) {
    let events = outs.iter().flat_map(|o| match o {
        Out::Single(ev) => std::slice::from_ref(ev),
        Out::Group(events) => &events[..],
    });
    let runs = events.map(|ev| (&**ev, std::slice::from_ref(&ev.env.id.ms)));
    delivered_runs(runs, transport, histogram, now_ms)
}

/// The deliveries over `transport`, written at `now_ms`, of runs of events of one type: an
/// event of the run (for its type and counters) and the times the run's events were stored
/// (a span keeps them side by side: its events are not looked at one by one).
pub(crate) fn delivered_runs<'a>(
    runs: impl Iterator<Item = (&'a HubEvent, &'a [u64])>,
    transport: Transport,
    histogram: &Histogram,
    now_ms: u64,
) {
    let latency = |ms: u64| now_ms.saturating_sub(ms) as f64 / 1000.0;
    if !crate::edge::on_edge() {
        for (ev, stamps) in runs {
            for ms in stamps {
                histogram.observe(latency(*ms));
            }
            ev.delivered[transport as usize].inc_by(stamps.len() as u64);
        }
        return;
    }
    let of = histogram as *const Histogram as usize;
    TALLY.with_borrow_mut(|t| {
        if t.n == 0 {
            t.since_ms = now_ms;
            // A tally starts: the flush is due in `FLUSH_MS` (the first one starts the
            // thread's flusher, a task of the edge thread's runtime, which it lives as long as).
            if let Some(w) = FLUSHER.with_borrow_mut(Option::take) {
                w.wake();
            } else if !FLUSHING.replace(true) {
                tokio::spawn(flusher());
            }
        }
        if t.latency.as_ref().is_none_or(|l| l.of != of) {
            t.flush();
            // Another gateway's runs were added just now.
            t.runs.retain(|r| r.of == of);
            t.latency = Some(Latencies {
                local: histogram.local(),
                of,
            });
        }
        let local = &t.latency.as_ref().expect("just set").local;
        let mut at = None::<usize>;
        for (ev, stamps) in runs {
            for ms in stamps {
                local.observe(latency(*ms));
            }
            let same = |r: &Run| r.transport == transport && r.event_type == ev.env.event_type;
            // Most events of a batch share their type: the last run is tried first.
            let i = match at.filter(|&i| same(&t.runs[i])) {
                Some(i) => i,
                None => match t.runs.iter().position(|r| r.of == of && same(r)) {
                    Some(i) => i,
                    None => {
                        t.runs.push(Run {
                            event_type: ev.env.event_type.clone(),
                            transport,
                            of,
                            counter: ev.delivered[transport as usize].clone(),
                            n: 0,
                        });
                        t.runs.len() - 1
                    }
                },
            };
            t.runs[i].n += stamps.len() as u64;
            at = Some(i);
            t.n += stamps.len() as u32;
        }
        if t.n >= FLUSH_AFTER || now_ms.saturating_sub(t.since_ms) >= FLUSH_MS {
            t.flush();
        }
    });
}

/// Adds this thread's tally to the shared metrics [`FLUSH_MS`] after it starts, for as long
/// as the thread's runtime runs.
async fn flusher() {
    loop {
        pending().await;
        tokio::time::sleep(std::time::Duration::from_millis(FLUSH_MS)).await;
        flush();
    }
}

/// Completes once this thread keeps a tally not yet added (the flusher waits on it, then
/// gives the tally [`FLUSH_MS`] to grow and calls [`flush`]).
fn pending() -> impl Future<Output = ()> {
    std::future::poll_fn(|cx| {
        if TALLY.with_borrow(|t| t.n > 0) {
            Poll::Ready(())
        } else {
            FLUSHER.with_borrow_mut(|w| *w = Some(cx.waker().clone()));
            Poll::Pending
        }
    })
}

/// Adds what this thread still keeps (the flusher).
fn flush() {
    TALLY.with_borrow_mut(|t| {
        if t.n > 0 {
            t.flush();
        }
    });
}

/// The events written to one connection, stored in its `events_sent` once per chunk: only this
/// stream writes it, so a plain store does, and the connection's shared record is not touched
/// per delivery (its atomic add, a cache miss per wake, was a tenth of the edge's time in S2).
#[derive(Default)]
pub(crate) struct Sent {
    total: u64,
    unstored: bool,
}

impl Sent {
    /// One more event written (or `n`, for a group).
    pub(crate) fn add(&mut self, n: u64) {
        self.total += n;
        self.unstored = true;
    }

    /// Stores the total in `events_sent`, if it moved.
    pub(crate) fn store(&mut self, events_sent: &AtomicU64) {
        if std::mem::take(&mut self.unstored) {
            events_sent.store(self.total, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use event_bus::{Action, Channel, Envelope, EventId, EventType, Payload, Timestamp};

    use super::*;
    use crate::{edge::Edge, telemetry::metrics::Metrics};

    fn ev(metrics: &Metrics, ty: EventType, ms: u64) -> Arc<HubEvent> {
        let env = Arc::new(Envelope {
            id: EventId::new(ms, 0),
            event_type: ty,
            channel: Channel::ORDERS,
            payload: Payload::new("o1", Action::Created),
            timestamp: Timestamp::now(),
            traceparent: None,
        });
        Arc::new(HubEvent::new(env, metrics))
    }

    /// `(delivered ORDER_RECEIVED, delivered INVENTORY_CHANGE, latencies observed)` of `m`.
    fn figures(m: &Metrics) -> (u64, u64, u64) {
        let n = |e: &Arc<HubEvent>| e.delivered[Transport::Sse as usize].get();
        (
            n(&ev(m, EventType::ORDER_RECEIVED, 0)),
            n(&ev(m, EventType::INVENTORY_CHANGE, 0)),
            m.delivery_latency.get_sample_count(),
        )
    }

    #[test]
    fn an_edge_thread_adds_its_tally_when_flushed_and_keeps_two_gateways_apart() {
        let edge = Edge::new(1, 0).unwrap();
        let (a, b) = (Arc::new(Metrics::new("a")), Arc::new(Metrics::new("b")));
        let (tx, rx) = std::sync::mpsc::channel();
        let (a2, b2) = (a.clone(), b.clone());
        edge.shards().handle(0).spawn(async move {
            use futures::FutureExt;
            let now = 1_000_000;
            let idle = pending().now_or_never().is_none();
            let order = ev(&a2, EventType::ORDER_RECEIVED, now - 5);
            let stock = ev(&a2, EventType::INVENTORY_CHANGE, now - 5);
            // Two writes of `a`, within the flush interval: kept on the thread.
            delivered(
                &[Out::Single(order.clone()), Out::Single(stock)],
                Transport::Sse,
                &a2.delivery_latency,
                now,
            );
            delivered(
                &[Out::Group(vec![order.clone(), order])],
                Transport::Sse,
                &a2.delivery_latency,
                now + 1,
            );
            let kept = figures(&a2);
            let due = pending().now_or_never().is_some();
            // A write of another gateway's: `a`'s tally is added first.
            let other = ev(&b2, EventType::ORDER_RECEIVED, now);
            delivered(&[Out::Single(other)], Transport::Sse, &b2.delivery_latency, now + 2);
            let after_switch = (figures(&a2), figures(&b2));
            flush();
            let idle_again = pending().now_or_never().is_none();
            tx.send(((idle, due, idle_again), kept, after_switch, figures(&b2)))
                .unwrap();
        });
        let (waits, kept, (a_after, b_before), b_flushed) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            waits,
            (true, true, true),
            "the flush waits exactly while nothing is tallied"
        );
        assert_eq!(kept, (0, 0, 0), "nothing reaches the shared metrics before a flush");
        assert_eq!(a_after, (3, 1, 4), "a's tally is added when b's deliveries arrive");
        assert_eq!(b_before, (0, 0, 0));
        assert_eq!(b_flushed, (1, 0, 1), "the flush tick adds the rest");
        assert_eq!(figures(&a), (3, 1, 4));
    }

    #[test]
    fn off_the_edge_each_delivery_is_added_at_once() {
        let m = Metrics::new("t");
        let e = ev(&m, EventType::ORDER_RECEIVED, 10);
        delivered(
            &[Out::Single(e.clone()), Out::Single(e)],
            Transport::Sse,
            &m.delivery_latency,
            20,
        );
        assert_eq!(figures(&m), (2, 0, 2));
    }
}
