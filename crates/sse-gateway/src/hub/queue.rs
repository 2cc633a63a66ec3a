//! A connection's queue: the hub pushes what the connection wants, the stream takes all that
//! is pending at once.
//!
//! Why not tokio's mpsc: it costs a permit, a slot and (on the receiving side) the semaphore's
//! lock per item, about a tenth of a fan-out's CPU, and an idle connection's channel holds a
//! block of 32 slots. Here a push is one uncontended lock, a take moves everything pending
//! (up to a batch) with one lock, the receiver is woken only when the queue stops being empty,
//! and an idle queue allocates nothing.

use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::task::AtomicWaker;

use super::event::Item;

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
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
    /// `cap` items are waiting: the item is given back.
    Full(Item),
    /// The stream is gone.
    Closed,
}

/// A queue of at most `cap` waiting items.
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
    pub(crate) fn push(&self, item: Item) -> Result<(), PushError> {
        let mut s = self.shared.state.lock().unwrap();
        if s.closed {
            return Err(PushError::Closed);
        }
        if s.items.len() >= self.cap {
            return Err(PushError::Full(item));
        }
        s.items.push_back(item);
        // A stream that found the queue non-empty takes again before it waits: only the first
        // item after it found it empty needs to wake it.
        let first = s.items.len() == 1;
        drop(s);
        if first {
            self.shared.waker.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.waker.wake();
    }
}

impl Receiver {
    /// Moves up to `max` waiting items (the oldest) into `out`, which must be empty, waiting
    /// for one if there is none; false once the hub closed the queue and nothing is left.
    /// Cancel-safe: nothing moves until it completes.
    pub async fn take(&self, out: &mut VecDeque<Item>, max: usize) -> bool {
        poll_fn(|cx| self.poll_take(cx, out, max)).await
    }

    fn poll_take(&self, cx: &mut Context<'_>, out: &mut VecDeque<Item>, max: usize) -> Poll<bool> {
        debug_assert!(out.is_empty());
        if let Some(done) = self.try_take(out, max) {
            return Poll::Ready(done);
        }
        // Registered before looking again: a push in between wakes it.
        self.shared.waker.register(cx.waker());
        match self.try_take(out, max) {
            Some(done) => Poll::Ready(done),
            None => Poll::Pending,
        }
    }

    fn try_take(&self, out: &mut VecDeque<Item>, max: usize) -> Option<bool> {
        let mut s = self.shared.state.lock().unwrap();
        if s.items.is_empty() {
            return s.closed.then_some(false);
        }
        if s.items.len() <= max {
            std::mem::swap(&mut s.items, out);
        } else {
            out.extend(s.items.drain(..max));
        }
        Some(true)
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

    fn item(n: u64) -> Item {
        Item::Resync(Box::new((Channel::ORDERS, EventId::new(n, 0))))
    }

    fn ids(v: &VecDeque<Item>) -> Vec<u64> {
        v.iter()
            .map(|i| match i {
                Item::Resync(r) => r.1.ms,
                Item::Event(_) => unreachable!(),
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

    #[test]
    fn items_leave_in_order_in_batches_and_a_full_queue_gives_the_item_back() {
        let (tx, rx) = queue(5);
        for n in 1..=5 {
            tx.push(item(n)).unwrap();
        }
        assert!(matches!(tx.push(item(6)), Err(PushError::Full(Item::Resync(r))) if r.1.ms == 6));
        assert_eq!(rx.len(), 5);
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(true));
        assert_eq!(ids(&out), [1, 2, 3]);
        out.clear();
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(true));
        assert_eq!(ids(&out), [4, 5]);
        out.clear();
        // Empty: it waits, and the next push wakes it once; a second push does not.
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Pending);
        tx.push(item(7)).unwrap();
        tx.push(item(8)).unwrap();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(true));
        assert_eq!(ids(&out), [7, 8]);
        out.clear();
        // The hub lets go: what is left is taken, then the queue says it is closed.
        tx.push(item(9)).unwrap();
        drop(tx);
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(true));
        assert_eq!(ids(&out), [9]);
        out.clear();
        assert_eq!(rx.poll_take(&mut cx, &mut out, 3), Poll::Ready(false));
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
        while rx.take(&mut out, 100).await {
            assert!(out.len() <= 100);
            seen.extend(ids(&out));
            out.clear();
        }
        pusher.join().unwrap();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
    }
}
