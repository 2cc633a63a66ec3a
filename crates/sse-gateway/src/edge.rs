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

/// The main runtime, where everything but the edge runs (the HTTP API, publishing, the
/// router, the Redis clients), with `threads` workers (0: one per four CPUs, at least one).
/// On few CPUs one worker costs least: every request and Redis reply then wakes one thread,
/// where with two a woken worker often wakes the other to share its tasks (measured with
/// `bench/outside-check.sh`, S2: about a fifth of the publish path's CPU).
pub fn main_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() / 4).max(1),
        n => n,
    };
    Builder::new_multi_thread().worker_threads(threads).enable_all().build()
}

impl Edge {
    /// An edge of `threads` shards (0: one per CPU).
    pub fn new(threads: usize) -> std::io::Result<Edge> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let id = NEXT_ID.fetch_add(1, Relaxed);
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for shard in 0..threads {
            let rt = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(rt.handle().clone());
            stops.push(stop);
            std::thread::Builder::new().name("edge".into()).spawn(move || {
                SHARD.set(Some((id, shard)));
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
