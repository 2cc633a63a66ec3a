//! A connection's queue: the hub pushes what the connection wants, the stream takes all that
//! is pending at once. It is also how the hub wakes a waiting stream for anything else (a
//! heartbeat, the drain, latest-wins, the hub stopping: [`Signals`]), so a live stream waits
//! on one thing, not on a shared token, a watch and a notify that each lock per wake.
//!
//! Why not tokio's mpsc: it costs a permit, a slot and (on the receiving side) the semaphore's
//! lock per item, about a tenth of a fan-out's CPU, and an idle connection's channel holds a
//! block of 32 slots. Here a push is one uncontended lock, a take moves everything pending
//! (up to a batch) with one lock, the receiver is woken only when the queue stops being empty,
//! and an idle queue allocates nothing.

use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{
        atomic::{AtomicU8, Ordering::AcqRel},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use futures::task::AtomicWaker;

use super::event::Item;

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
    /// [`Signals`] raised and not yet seen by the stream.
    signals: AtomicU8,
}

/// What else the hub wakes a stream for (bits, several at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals(pub u8);

impl Signals {
    /// The shard's heartbeat tick.
    pub const HEARTBEAT: Signals = Signals(1);
    /// The server drains.
    pub const DRAIN: Signals = Signals(2);
    /// Something was put aside latest-wins.
    pub const COLLAPSED: Signals = Signals(4);
    /// The hub stopped: no more events will come.
    pub const STOP: Signals = Signals(8);
    /// This instance holds more than its share of the streams: this one should reconnect
    /// (through the load balancer), as on a drain.
    pub const SHED: Signals = Signals(16);
    /// The queue was full: the hub queues nothing more until the stream has read what it
    /// missed from the store (`behind` on the connection's record).
    pub const BEHIND: Signals = Signals(32);

    /// Whether `s` is among these.
    pub fn has(self, s: Signals) -> bool {
        self.0 & s.0 != 0
    }
}

/// What woke a waiting stream ([`Receiver::take`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Woke {
    /// Items were moved out.
    pub items: bool,
    /// The hub closed the queue and nothing is left.
    pub closed: bool,
    /// Signals raised since the last wake.
    pub signals: Signals,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    /// The events the items carry ([`Item::weight`]): what the queue's bound counts.
    weight: usize,
    /// The other side is gone.
    closed: bool,
}

/// The hub's end: dropping it closes the queue (the stream takes what is left, then ends).
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Shared>,
    cap: usize,
}

/// The stream's end: dropping it closes the queue (the hub's next push finds it closed).
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

/// Why a push failed.
#[derive(Debug)]
pub(crate) enum PushError {
    /// `cap` events are waiting: the item is given back.
    Full(Item),
    /// The stream is gone.
    Closed,
}

/// A queue of at most `cap` waiting events (a span of several counts each; one alone is
/// always taken into an empty queue).
pub(crate) fn queue(cap: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared::default());
    (
        Sender {
            shared: shared.clone(),
            cap: cap.max(1),
        },
        Receiver { shared },
    )
}

impl Sender {
    /// Adds an item, waking the stream if the queue was empty.
    #[cfg(test)]
    pub(crate) fn push(&self, item: Item) -> Result<(), PushError> {
        self.pushing().push(item)
    }

    /// The queue locked for several pushes (a fan-out's batch): the stream is woken once, when
    /// the lock is let go, if the queue was empty before.
    pub(crate) fn pushing(&self) -> Pushing<'_> {
        let state = self.shared.state.lock().unwrap();
        let was_empty = state.items.is_empty();
        Pushing {
            sender: self,
            state: Some(state),
            was_empty,
        }
    }

    /// Raises `s` and wakes the stream.
    pub(crate) fn signal(&self, s: Signals) {
        self.shared.signals.fetch_or(s.0, AcqRel);
        self.shared.waker.wake();
    }
}

/// A locked queue ([`Sender::pushing`]).
pub(crate) struct Pushing<'a> {
    sender: &'a Sender,
    state: Option<std::sync::MutexGuard<'a, State>>,
    was_empty: bool,
}

impl Pushing<'_> {
    /// Adds an item.
    pub(crate) fn push(&mut self, item: Item) -> Result<(), PushError> {
        let s = self.state.as_mut().expect("locked until dropped");
        if s.closed {
            return Err(PushError::Closed);
        }
        let weight = item.weight();
        if !s.items.is_empty() && s.weight + weight > self.sender.cap {
            return Err(PushError::Full(item));
        }
        s.weight += weight;
        s.items.push_back(item);
        Ok(())
    }
}

impl Drop for Pushing<'_> {
    fn drop(&mut self) {
        let pushed = self.state.take().is_some_and(|s| !s.items.is_empty());
        // A stream that found the queue non-empty takes again before it waits: only a queue
        // that was empty when it last looked needs to wake it.
        if self.was_empty && pushed {
            self.sender.shared.waker.wake();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.waker.wake();
    }
}

impl Receiver {
    /// Moves up to `max` waiting items (the oldest) into `out`, which must be empty, and takes
    /// the signals raised, waiting until there is one or the other, or the hub closed the queue
    /// and nothing is left. Cancel-safe: nothing moves until it completes.
    pub async fn take(&self, out: &mut VecDeque<Item>, max: usize) -> Woke {
        poll_fn(|cx| self.poll_take(cx, out, max)).await
    }

    fn poll_take(&self, cx: &mut Context<'_>, out: &mut VecDeque<Item>, max: usize) -> Poll<Woke> {
        debug_assert!(out.is_empty());
        if let Some(woke) = self.try_take(out, max) {
            return Poll::Ready(woke);
        }
        // Registered before looking again: a push or a signal in between wakes it.
        self.shared.waker.register(cx.waker());
        match self.try_take(out, max) {
            Some(woke) => Poll::Ready(woke),
            None => Poll::Pending,
        }
    }

    fn try_take(&self, out: &mut VecDeque<Item>, max: usize) -> Option<Woke> {
        let signals = Signals(self.shared.signals.swap(0, AcqRel));
        let mut s = self.shared.state.lock().unwrap();
        let closed = s.items.is_empty() && s.closed;
        if !s.items.is_empty() {
            if s.items.len() <= max {
                std::mem::swap(&mut s.items, out);
                s.weight = 0;
            } else {
                out.extend(s.items.drain(..max));
                s.weight -= out.iter().map(Item::weight).sum::<usize>();
            }
        }
        let items = !out.is_empty();
        (items || closed || signals.0 != 0).then_some(Woke { items, closed, signals })
    }

    /// Items waiting (not yet taken).
    pub fn len(&self) -> usize {
        self.shared.state.lock().unwrap().items.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().unwrap();
        s.closed = true;
        s.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Channel, EventId};
    use std::task::Waker;

    const ITEMS: Woke = Woke {
        items: true,
        closed: false,
        signals: Signals(0),
    };

    #[test]
    fn a_signal_wakes_a_waiting_stream_once_and_comes_with_the_items() {
        let (tx, rx) = queue(4);
        let (count, waker) = Count::waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        assert_eq!(rx.poll_take(&mut cx, &mut out, 10), Poll::Pending);
        tx.signal(Signals::HEARTBEAT);
        assert_eq!(count.wakes(), 1);
        let Poll::Ready(woke) = rx.poll_take(&mut cx, &mut out, 10) else {
            panic!("woken")
        };
        assert!(!woke.items && !woke.closed && woke.signals.has(Signals::HEARTBEAT));
        // Seen once: the next take waits again.
        assert_eq!(rx.poll_take(&mut cx, &mut out, 10), Poll::Pending);
        tx.signal(Signals::DRAIN);
        tx.signal(Signals::COLLAPSED);
        tx.push(item(1)).unwrap();
        let Poll::Ready(woke) = rx.poll_take(&mut cx, &mut out, 10) else {
            panic!("woken")
        };
        assert!(woke.items && woke.signals.has(Signals::DRAIN) && woke.signals.has(Signals::COLLAPSED));
        assert!(!woke.signals.has(Signals::HEARTBEAT) && !woke.signals.has(Signals::STOP));
        assert_eq!(ids(&out), [1]);
    }

    fn item(n: u64) -> Item {
        Item::Resync(Box::new((Channel::ORDERS, EventId::new(n, 0))))
    }

    fn ids(v: &VecDeque<Item>) -> Vec<u64> {
        v.iter()
            .map(|i| match i {
                Item::Resync(r) => r.1.ms,
                Item::Event(_) | Item::Presence(_) | Item::Span(_) => unreachable!(),
            })
            .collect()
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Count {
        /// A counting waker, and its count.
        fn waker() -> (Arc<Count>, Waker) {
            let count = Arc::new(Count(Default::default()));
            (count.clone(), Waker::from(count))
        }

        /// Wakes so far.
        fn wakes(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn items_leave_in_order_in_batches_and_a_full_queue_gives_the_item_back() {
        let (tx, rx) = queue(5);
        for n in 1..=5 {
            tx.push(item(n)).unwrap();
        }
        assert!(matches!(tx.push(item(6)), Err(PushError::Full(Item::Resync(r))) if r.1.ms == 6));
        assert_eq!(rx.len(), 5);
        let (count, waker) = Count::waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(ITEMS));
        assert_eq!(ids(&out), [1, 2, 3]);
        out.clear();
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(ITEMS));
        assert_eq!(ids(&out), [4, 5]);
        out.clear();
        // Empty: it waits, and the next push wakes it once; a second push does not.
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Pending);
        tx.push(item(7)).unwrap();
        tx.push(item(8)).unwrap();
        assert_eq!(count.wakes(), 1);
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(ITEMS));
        assert_eq!(ids(&out), [7, 8]);
        out.clear();
        // The hub lets go: what is left is taken, then the queue says it is closed.
        tx.push(item(9)).unwrap();
        drop(tx);
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(ITEMS));
        assert_eq!(ids(&out), [9]);
        out.clear();
        assert_eq!(
            rx.poll_take(&mut cx, &mut out, 3),
            Poll::Ready(Woke {
                items: false,
                closed: true,
                signals: Signals::default()
            })
        );
    }

    #[test]
    fn pushes_under_one_lock_wake_the_stream_once_when_it_is_let_go() {
        let (tx, rx) = queue(3);
        let (count, waker) = Count::waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        assert_eq!(rx.poll_take(&mut cx, &mut out, 10), Poll::Pending);
        let mut q = tx.pushing();
        for n in 1..=3 {
            q.push(item(n)).unwrap();
        }
        assert!(matches!(q.push(item(4)), Err(PushError::Full(_))));
        assert_eq!(count.wakes(), 0, "not while locked");
        drop(q);
        assert_eq!(count.wakes(), 1);
        // Not empty before: no wake (the stream takes again before it waits).
        tx.pushing();
        assert_eq!(count.wakes(), 1);
        assert_eq!(rx.poll_take(&mut cx, &mut out, 10), Poll::Ready(ITEMS));
        assert_eq!(ids(&out), [1, 2, 3]);
        // Empty, and nothing pushed: no wake.
        drop(tx.pushing());
        assert_eq!(count.wakes(), 1);
    }

    #[test]
    fn a_push_to_a_gone_stream_is_refused_and_wakes_nobody() {
        let (tx, rx) = queue(2);
        tx.push(item(1)).unwrap();
        drop(rx);
        assert!(matches!(tx.push(item(2)), Err(PushError::Closed)));
        assert!(
            tx.shared.state.lock().unwrap().items.is_empty(),
            "what was queued is freed"
        );
    }

    #[tokio::test]
    async fn a_waiting_stream_is_woken_from_another_thread() {
        let (tx, rx) = queue(1024);
        let pusher = std::thread::spawn(move || {
            for n in 0..10_000 {
                while let Err(PushError::Full(_)) = tx.push(item(n)) {
                    std::thread::yield_now();
                }
            }
        });
        let mut seen = Vec::new();
        let mut out = VecDeque::new();
        while rx.take(&mut out, 100).await.items {
            assert!(out.len() <= 100);
            seen.extend(ids(&out));
            out.clear();
        }
        pusher.join().unwrap();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
    }
}
