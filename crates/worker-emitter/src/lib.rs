//! `worker-emitter`: processors on BullMQ-compatible queues that emit realtime events.
//!
//! Node.js code enqueues jobs with BullMQ (`queue.add('inventory-check', {...}, {attempts,
//! backoff})`); this service takes them with BullMQ's official Rust port (`bullmq-official`,
//! the same Lua scripts as Node BullMQ 6.7), runs one processor per queue and emits the events
//! on the bus, exactly once per job however often the job runs (retries, stalls, kill -9).
//!
//! # Layout
//! - [`config`]: [`EmitterConfig`], variable and queue names (`docs/reference.md`).
//! - [`job`]: the [`Processor`] trait ("hooks"): plan a job, decide against an entity's state.
//! - [`processors`]: inventory (with HTTP source checks), orders, pricing, listings.
//! - [`runner`]: [`Emitter`]: the exactly-once core and the BullMQ workers.
//! - [`webhook`]: the signed order intake.
//! - [`metrics`]: Prometheus metrics.
//!
//! # Adding a processor
//! Implement [`Processor`] (see [`processors::listings`] for a small one) and pass it to
//! [`Emitter::new`] together with (or instead of) [`runner::builtin`].
//!
//! # Emitting without a queue
//! Other Rust worker processes link `event-bus` and publish directly, with an idempotency key
//! per unit of work: see `examples/link_bus.rs`.

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod job;
pub mod metrics;
pub mod processors;
pub mod runner;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use event_bus::Broker;
use tokio_util::sync::CancellationToken;

pub use config::{EmitterConfig, ENV_ALIASES};
pub use job::{Decision, JobError, JobInput, Plan, Processor};
pub use runner::Emitter;

#[derive(Clone, Debug)]
struct App {
    emitter: Emitter,
    intake: Option<webhook::Intake>,
    ready: CancellationToken,
    draining: CancellationToken,
}

/// The router: `/metrics`, `/healthz`, `/readyz` and, when the orders processor runs,
/// `POST /webhooks/orders/{marketplace}`.
fn router(app: App) -> Router {
    let mut r = Router::new()
        .route(
            "/metrics",
            get(|State(a): State<App>| async move { a.emitter.metrics().render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(a): State<App>| async move {
                let ok = a.ready.is_cancelled() && !a.draining.is_cancelled() && a.emitter.bus().health().is_up();
                if ok {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                }
            }),
        )
        .with_state(app.clone());
    if let Some(intake) = app.intake {
        r = r.merge(
            Router::new()
                .route("/webhooks/orders/{marketplace}", post(webhook::orders))
                .with_state(intake),
        );
    }
    r
}

/// The BullMQ side without HTTP: the emitter and one worker per processor's queue, each watched
/// (stalls, failures into the metrics). The all-in-one binary runs this next to its gateway.
pub struct Workers {
    emitter: Emitter,
    workers: Vec<Arc<bullmq::Worker>>,
    grace_ms: u64,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("workers", &self.workers.len()).finish()
    }
}

impl Workers {
    /// Checks the queues' producers, then starts the workers on `bus` (which must be Redis:
    /// BullMQ's queues live there).
    pub async fn start(bus: event_bus::AnyBus, config: &EmitterConfig) -> anyhow::Result<Workers> {
        let emitter = Emitter::new(bus, config.clone(), runner::builtin(config));
        emitter.check_producers().await?;
        let workers: Vec<Arc<bullmq::Worker>> = emitter.start_workers().await?.into_iter().map(Arc::new).collect();
        for (w, kind) in workers.iter().zip(config.kinds()) {
            tokio::spawn(emitter.clone().watch_owned(config.queue_of(kind).to_owned(), w.clone()));
        }
        Ok(Workers {
            emitter,
            workers,
            grace_ms: config.shutdown_grace_ms,
        })
    }

    /// The emitter the workers run (its metrics, its bus).
    pub fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// Stops taking jobs; in-flight ones may finish within `shutdown_grace_ms`.
    pub async fn stop(self) {
        tracing::info!(grace_ms = self.grace_ms, "stopping: in-flight jobs may finish");
        let closes = self.workers.iter().map(|w| w.close(self.grace_ms));
        for r in futures::future::join_all(closes).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "closing a worker");
            }
        }
    }
}

/// The service: check the queues' producers, start the workers and the HTTP endpoints, and on
/// `shutdown` let in-flight jobs finish within the grace period.
pub async fn run(config: EmitterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = event_bus::connect(config.bus.clone()).await?;
    let workers = Workers::start(bus, &config).await?;
    let emitter = workers.emitter().clone();
    let intake = if config.kinds().contains(&"orders") {
        let queue = bullmq::Queue::with_options(
            &config.queues.orders,
            bullmq::QueueOptions {
                connection: bullmq::options::RedisConnectionOptions {
                    url: config.bus.redis_url.clone().unwrap_or_default(),
                    ..Default::default()
                },
                prefix: config.queue_prefix.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("queue {}: {e}", config.queues.orders))?;
        Some(webhook::Intake {
            emitter: emitter.clone(),
            queue: Arc::new(queue),
        })
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(&config.http_addr).await?;
    let app = App {
        emitter,
        intake,
        ready: CancellationToken::new(),
        draining: shutdown.clone(),
    };
    let server = tokio::spawn(service_kit::http::serve(
        listener,
        router(app.clone()),
        shutdown.clone(),
    ));
    app.ready.cancel();
    tracing::info!(addr = %config.http_addr, instance = %config.instance_id, "worker-emitter running");
    shutdown.cancelled().await;
    workers.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    tracing::info!("worker-emitter stopped");
    Ok(())
}

impl Emitter {
    async fn watch_owned(self, queue: String, worker: Arc<bullmq::Worker>) {
        self.watch(queue, worker).await
    }
}
