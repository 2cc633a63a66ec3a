//! The edge: the streams (the lean SSE path, WebSocket sessions) and the hub's fan-out run on
//! threads of their own, apart from the main runtime's publishing, router and Redis clients,
//! and each of those threads is a shard of the hub with its own connections.
//!
//! Why apart: one event fanned out wakes every connection's task. On one runtime, a publish's
//! every hop (its request, the Redis reply, the answer) then waits behind thousands of woken
//! streams, and a burst trickles in at a few hundred publishes a second (`docs/architecture.md`,
//! "Publishing during a fan-out"). Two runtimes are two sets of threads, and the kernel's
//! scheduler gives a mostly idle publish thread the CPU as soon as it has work.
//!
//! Why shards: each edge thread is a single-threaded runtime that runs the fan-out of its own
//! connections, so an event wakes one task per thread (the shard's fan-out), and the fan-out
//! wakes the streams it feeds on the same thread: no stream is woken across threads, none is
//! stolen by another worker, and a shard's queues and sockets stay in one CPU's cache.
//!
//! Why lower (`edge_nice`): a burst keeps the edge busy, and a publish is a chain of short
//! hops on the main runtime (its request, the Redis reply, the answer), each of which waited
//! behind the fan-out for a CPU. At a lower priority the edge yields to each hop at once and
//! takes the rest. The fan-out loses nothing by it: what waits meanwhile is written later in
//! bigger spans (`docs/architecture.md`, "Publishing during a fan-out").

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use tokio::{
    runtime::{Builder, Handle},
    sync::oneshot,
};

thread_local! {
    /// The edge (its id) and shard this thread runs, if it is an edge thread.
    static SHARD: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The edge's threads, each a single-threaded runtime; stopped (without waiting) when dropped.
#[derive(Debug)]
pub struct Edge {
    shards: Shards,
    stops: Vec<oneshot::Sender<()>>,
}

/// Where the shards of an edge run: what the hub needs to run a fan-out on each. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shards {
    id: u64,
    handles: Vec<Handle>,
}

/// How many threads each side gets: `(main, edge)` from `main_threads` and `edge_threads`.
/// By default (0) the main runtime has one worker per four CPUs (at least one) and the edge
/// the rest (at least one): one thread per CPU in all. With more threads than CPUs, the edge's
/// threads, busy with a fan-out, held every CPU, and each hop of a publish (its request, the
/// Redis reply, the answer) waited for one: with 1,000 subscribers on 2 CPUs, 3,200 publishes
/// a second got through with two edge threads against 12,000 with one, and S2's CPU per
/// delivery was 1.105 µs against 0.975 (`bench/outside-check.sh`, medians of 3).
pub fn threads(main: usize, edge: usize) -> (usize, usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let main = match main {
        0 => (cpus / 4).max(1),
        n => n,
    };
    let edge = match edge {
        0 => cpus.saturating_sub(main).max(1),
        n => n,
    };
    (main, edge)
}

/// The main runtime, where everything but the edge runs (the HTTP API, publishing, the
/// router, the Redis clients), with `threads` workers. On few CPUs one worker costs least:
/// every request and Redis reply then wakes one thread, where with two a woken worker often
/// wakes the other to share its tasks (three times the context switches; at 1,000 publishes a
/// second, about 205 µs of CPU per publish against 250 to 300).
pub fn main_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
}

impl Edge {
    /// An edge of `threads` shards (at least one; [`threads`] gives the default), running
    /// `nice` steps lower than the thread that makes it ([`lower`]).
    pub fn new(threads: usize, nice: u8) -> std::io::Result<Edge> {
        let threads = threads.max(1);
        let id = NEXT_ID.fetch_add(1, Relaxed);
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for shard in 0..threads {
            let rt = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(rt.handle().clone());
            stops.push(stop);
            std::thread::Builder::new().name("edge".into()).spawn(move || {
                SHARD.set(Some((id, shard)));
                lower(nice);
                // A single-threaded runtime runs its tasks while it blocks on this.
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Its tasks are done (the drain waited for them) or abandoned with the process.
                rt.shutdown_background();
            })?;
        }
        Ok(Edge {
            shards: Shards { id, handles },
            stops,
        })
    }

    /// The shards, for the hub.
    pub fn shards(&self) -> Shards {
        self.shards.clone()
    }

    /// The shard to serve a new connection on: the one running the fewest tasks.
    pub fn pick(&self) -> &Handle {
        let h = &self.shards.handles;
        h.iter().min_by_key(|h| h.metrics().num_alive_tasks()).unwrap_or(&h[0])
    }
}

impl Shards {
    /// How many.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: an edge has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Where shard `i` runs.
    pub fn handle(&self, i: usize) -> &Handle {
        &self.handles[i]
    }

    /// The shard the calling thread runs, if it is one of these.
    pub fn current(&self) -> Option<usize> {
        SHARD.get().and_then(|(id, i)| (id == self.id).then_some(i))
    }
}

/// Lowers the calling thread's priority by `steps` nice steps (at most to 19). Raising a nice
/// value needs no privilege; should the system refuse it all the same, the edge runs at the
/// main runtime's priority, as it would with `edge_nice` 0, and says so.
fn lower(steps: u8) {
    use rustix::{process, thread};
    if steps == 0 {
        return;
    }
    let tid = Some(thread::gettid());
    let set = process::getpriority_process(tid)
        .and_then(|now| process::setpriority_process(tid, (now + i32::from(steps)).min(19)));
    if let Err(e) = set {
        tracing::warn!(error = %e, "edge_nice: could not lower the edge thread's priority; it runs at the main runtime's");
    }
}

/// The calling thread's nice value.
#[cfg(test)]
fn nice_now() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
}

/// Whether the calling thread is an edge thread (of any edge).
pub(crate) fn on_edge() -> bool {
    SHARD.get().is_some()
}

impl Drop for Edge {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_the_two_sides_have_one_thread_per_cpu_and_each_at_least_one() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (main, edge) = threads(0, 0);
        assert!(main >= 1 && edge >= 1, "{main} {edge}");
        assert_eq!(main + edge, cpus.max(2), "{cpus} CPUs");
        assert_eq!(main, (cpus / 4).max(1));
        assert_eq!(threads(3, 5), (3, 5), "set values are kept");
        assert_eq!(threads(2, 0).1, cpus.saturating_sub(2).max(1));
    }

    #[test]
    fn edge_threads_run_the_set_steps_lower_than_their_maker_and_no_lower_than_19() {
        let here = nice_now();
        for (steps, want) in [(0, here), (5, (here + 5).min(19)), (19, 19)] {
            let edge = Edge::new(2, steps).unwrap();
            for shard in 0..2 {
                let (tx, rx) = std::sync::mpsc::channel();
                edge.shards()
                    .handle(shard)
                    .spawn(async move { tx.send(nice_now()).unwrap() });
                let got = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
                assert_eq!(got, want, "{steps} steps lower, shard {shard}");
            }
        }
        assert_eq!(nice_now(), here, "the maker's own priority is untouched");
    }
}
