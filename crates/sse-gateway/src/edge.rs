//! The edge runtime: the streams (the lean SSE path, WebSocket sessions) and the hub's fan-out
//! run on threads of their own, apart from the main runtime's publishing, router and Redis
//! clients.
//!
//! Why: one event fanned out wakes every connection's task. On one runtime, a publish's every
//! hop (its request, the Redis reply, the answer) then waits behind thousands of woken streams,
//! and a burst trickles in at a few hundred publishes a second (`docs/architecture.md`,
//! "Publishing during a fan-out"). Two runtimes are two sets of threads, and the kernel's
//! scheduler gives a mostly idle publish thread the CPU as soon as it has work.

use tokio::runtime::{Builder, Handle, Runtime};

/// The edge runtime, shut down (without waiting) when dropped.
#[derive(Debug)]
pub struct Edge {
    rt: Option<Runtime>,
}

impl Edge {
    /// A runtime of `threads` workers (0: one per CPU).
    pub fn new(threads: usize) -> std::io::Result<Edge> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let rt = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("edge")
            .enable_all()
            .build()?;
        Ok(Edge { rt: Some(rt) })
    }

    /// Where to spawn onto it.
    pub fn handle(&self) -> Handle {
        self.rt.as_ref().expect("running until dropped").handle().clone()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        // Dropping a runtime waits for its blocking work, which async code must not do; its
        // tasks are done (the drain waited for them) or abandoned with the process.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
