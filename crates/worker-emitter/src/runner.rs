//! Running processors: the exactly-once core ([`Emitter::process`]) and the BullMQ workers
//! around it (official Rust port of BullMQ: the same Lua scripts as Node BullMQ 6.7).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bullmq::{options::RedisConnectionOptions, QueueOptions, WorkerOptions};
use event_bus::{AnyBus, Broker, EntityState, Guard, Guarded, NewEvent};
use serde_json::{json, Value};
use service_kit::trace::{Hop, Kind};
use sha2::{Digest, Sha256};

use crate::{
    config::EmitterConfig,
    job::{Decision, JobError, JobInput, Processor},
    metrics::Metrics,
    processors::{Inventory, Listings, Orders, Pricing},
};

/// The processors, the bus they emit on, and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct Emitter {
    inner: Arc<Inner>,
}

struct Inner {
    bus: AnyBus,
    config: EmitterConfig,
    metrics: Metrics,
    processors: Vec<Arc<dyn Processor>>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field(
                "queues",
                &self.inner.processors.iter().map(|p| p.queue()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The processors `config.processors` names, built in.
pub fn builtin(config: &EmitterConfig) -> Vec<Arc<dyn Processor>> {
    config
        .kinds()
        .into_iter()
        .map(|kind| -> Arc<dyn Processor> {
            let queue = config.queue_of(kind).to_owned();
            match kind {
                "inventory" => Arc::new(Inventory::new(queue, config.inventory.clone())),
                "orders" => Arc::new(Orders {
                    queue,
                    remember_days: config.order_memory_days,
                }),
                "pricing" => Arc::new(Pricing { queue }),
                _ => Arc::new(Listings { queue }),
            }
        })
        .collect()
}

/// The idempotency key of a job: queue, id and creation time (ids restart at 1 when a queue is
/// obliterated; the creation time tells two jobs with one id apart). Hashed when the job id
/// has characters an idempotency key cannot.
pub fn job_key(queue: &str, id: &str, created_ms: u64) -> String {
    let key = format!("job:{queue}:{id}:{created_ms}");
    let ok = key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if ok {
        key
    } else {
        let digest = Sha256::digest(key.as_bytes());
        format!("job:{queue}:sha256:{}", hex::encode(&digest[..16]))
    }
}

impl Emitter {
    /// An emitter with `processors` on `bus`.
    pub fn new(bus: AnyBus, config: EmitterConfig, processors: Vec<Arc<dyn Processor>>) -> Self {
        let queues: Vec<&str> = processors.iter().map(|p| p.queue()).collect();
        let metrics = Metrics::for_queues(&queues);
        Emitter {
            inner: Arc::new(Inner {
                bus,
                config,
                metrics,
                processors,
            }),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The bus.
    pub fn bus(&self) -> &AnyBus {
        &self.inner.bus
    }

    /// The configuration.
    pub fn config(&self) -> &EmitterConfig {
        &self.inner.config
    }

    /// Runs one job through `p`, emitting its event at most once however often it runs:
    /// the job's return value, `{"emitted": [<id>]}` or `{"emitted": [], "reason": ...}`.
    pub async fn process(&self, p: &dyn Processor, job: &JobInput, created_ms: u64) -> Result<Value, JobError> {
        let m = &self.inner.metrics;
        let queue = p.queue();
        let channel = p.channel();
        let bus = &self.inner.bus;
        let transient = |e: event_bus::BusError| {
            if e.is_unavailable() {
                JobError::Unavailable(format!("event bus: {e}"))
            } else {
                JobError::Transient(format!("event bus: {e}"))
            }
        };
        let key = job_key(queue, &job.id, created_ms);
        // A retry, or a re-run after a stall, of a job that emitted: its decision may now be
        // "unchanged" (the state moved with its event); answer what it emitted. (An emitting
        // decision needs no such look-up: the guarded publish answers the first id itself.)
        let already = || async {
            let id = bus.published_with(&channel, &key).await.map_err(transient)?;
            if id.is_some() {
                m.duplicates.with_label_values(&[queue]).inc();
            }
            Ok::<_, JobError>(id.map(|id| json!({"emitted": [id.to_string()]})))
        };
        let plan = p.plan(job).await?;
        for _ in 0..self.inner.config.max_conflicts {
            let current = bus.state(&channel, &plan.entity).await.map_err(transient)?;
            let guard = |state: String| {
                Guard::new(plan.entity.clone(), current.clone(), state).with_ttl_secs(p.state_ttl_secs())
            };
            let outcome = match (plan.decide)(current.as_deref())? {
                Decision::Unchanged(reason) => {
                    return Ok(already()
                        .await?
                        .unwrap_or_else(|| json!({"emitted": [], "reason": reason})))
                }
                Decision::Baseline { state } => {
                    if let Some(done) = already().await? {
                        return Ok(done);
                    }
                    match bus.set_state(&channel, guard(state)).await.map_err(transient)? {
                        Guarded::Done(_) => return Ok(json!({"emitted": [], "reason": "first_seen"})),
                        conflict => conflict,
                    }
                }
                Decision::Emit { event, state } => {
                    let event: NewEvent = event.with_idempotency_key(&key).with_traceparent(job.traceparent);
                    bus.publish_guarded(&channel, event, guard(state))
                        .await
                        .map_err(transient)?
                }
            };
            match outcome {
                Guarded::Done(published) => {
                    if published.duplicate {
                        m.duplicates.with_label_values(&[queue]).inc();
                    } else {
                        m.emitted.with_label_values(&[queue]).inc();
                    }
                    return Ok(json!({"emitted": [published.id.to_string()]}));
                }
                Guarded::Conflict { .. } => m.conflicts.with_label_values(&[queue]).inc(),
            }
        }
        Err(JobError::Transient(format!(
            "the state of {} changed {} times while deciding; retried later",
            plan.entity, self.inner.config.max_conflicts
        )))
    }

    fn connection(&self) -> RedisConnectionOptions {
        RedisConnectionOptions {
            url: self.inner.config.bus.redis_url.clone().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Refuses queues whose producer (`meta.version`, written by Node BullMQ) is not one this
    /// worker was tested with.
    pub async fn check_producers(&self) -> anyhow::Result<()> {
        let cfg = &self.inner.config;
        for p in &self.inner.processors {
            let queue = bullmq::Queue::with_options(
                p.queue(),
                QueueOptions {
                    connection: self.connection(),
                    prefix: cfg.queue_prefix.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("queue {}: {e}", p.queue()))?;
            let meta = queue
                .get_meta()
                .await
                .map_err(|e| anyhow::anyhow!("queue {}: {e}", p.queue()));
            queue.close().await;
            if let Some(version) = meta?.other.get("version") {
                if !cfg.producers().contains(&version.as_str()) {
                    anyhow::bail!(
                        "queue {:?} was created by {version:?}, a producer this worker was not tested with \
                         (tested: {}). Test it, then add it to accepted_producers (ACCEPTED_PRODUCERS).",
                        p.queue(),
                        cfg.accepted_producers
                    );
                }
            }
        }
        Ok(())
    }

    /// Starts one BullMQ worker per processor.
    pub async fn start_workers(&self) -> anyhow::Result<Vec<bullmq::Worker>> {
        let cfg = &self.inner.config;
        let mut workers = Vec::new();
        for p in &self.inner.processors {
            let (emitter, proc_) = (self.clone(), p.clone());
            let processor = move |job: bullmq::Job, _cancel| {
                let (emitter, p) = (emitter.clone(), proc_.clone());
                async move { emitter.run_job(&*p, job).await }
            };
            let opts = WorkerOptions {
                connection: self.connection(),
                prefix: cfg.queue_prefix.clone(),
                name: Some(cfg.instance_id.clone()),
                concurrency: cfg.concurrency,
                lock_duration: cfg.lock_duration_ms,
                stalled_interval: cfg.stalled_interval_ms,
                max_stalled_count: cfg.max_stalled_count,
                drain_delay: 5,
                run_retry_delay: 1_000,
                ..Default::default()
            };
            let worker = bullmq::Worker::with_options(p.queue(), processor, opts)
                .await
                .map_err(|e| anyhow::anyhow!("worker for queue {}: {e}", p.queue()))?;
            tracing::info!(queue = p.queue(), channel = %p.channel(), concurrency = cfg.concurrency, "processing");
            workers.push(worker);
        }
        Ok(workers)
    }

    async fn run_job(&self, p: &dyn Processor, job: bullmq::Job) -> Result<Value, bullmq::Error> {
        let queue = p.queue();
        // The job's hop: the producer's trace (a `traceparent` in the data) or a new one.
        let parent = job.data()["traceparent"]
            .as_str()
            .and_then(|t| t.parse::<event_bus::Traceparent>().ok())
            .map(|t| (t.trace_id(), t.span_id()));
        let attributes = [
            ("rakuda.queue", queue.to_owned()),
            ("rakuda.job_id", job.id().to_owned()),
        ];
        let mut hop = Hop::start("job", Kind::Consumer, parent, &attributes);
        let (trace, span) = hop.ids();
        let input = JobInput {
            queue: queue.to_owned(),
            id: job.id().to_owned(),
            name: job.name().to_owned(),
            data: job.data().clone(),
            attempts_made: job.attempts_made(),
            traceparent: event_bus::Traceparent::from_ids(trace, span, true),
        };
        let started = Instant::now();
        let m = &self.inner.metrics;
        // An unreachable bus (Redis restarting, a failover) is waited for in place, for half
        // the lock (which the worker renews meanwhile): the event is late by the outage, not by
        // a failed attempt's backoff or a stall's detection (up to two stall intervals).
        let wait = Duration::from_millis(self.inner.config.lock_duration_ms / 2);
        let mut pause = Duration::from_millis(100);
        let mut waited = false;
        let result = loop {
            match self.process(p, &input, job.timestamp()).await {
                Err(JobError::Unavailable(e)) if started.elapsed() + pause < wait => {
                    if !waited {
                        waited = true;
                        m.bus_waits.with_label_values(&[queue]).inc();
                        tracing::debug!(queue, job = %input.id, error = %e, "event bus unreachable; the job waits for it");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                r => break r,
            }
        };
        m.duration
            .with_label_values(&[queue])
            .observe(started.elapsed().as_secs_f64());
        m.jobs
            .with_label_values(&[queue, if result.is_ok() { "completed" } else { "failed" }])
            .inc();
        match &result {
            Ok(v) => {
                let emitted = v["emitted"].to_string();
                hop.set("rakuda.emitted", emitted.clone());
                tracing::debug!(target: "rakuda::trace", trace_id = %hop.trace_id_hex(), queue, job = %input.id, %emitted, "job done");
            }
            Err(e) => {
                hop.fail(&e.to_string());
                tracing::debug!(target: "rakuda::trace", trace_id = %hop.trace_id_hex(), queue, job = %input.id, error = %e, "job failed");
            }
        }
        result.map_err(|e| match e {
            JobError::Invalid(_) => bullmq::Error::Unrecoverable(e.to_string()),
            JobError::Transient(_) | JobError::Unavailable(_) => bullmq::Error::ProcessingError(e.to_string()),
        })
    }

    /// Follows a worker's events (the channel would grow without a reader): stalls into the
    /// metrics, errors into the log, once per kind until the worker is well again.
    pub async fn watch(&self, queue: String, worker: Arc<bullmq::Worker>) {
        let mut failing = false;
        while let Some(ev) = worker.next_event().await {
            match ev {
                bullmq::worker::WorkerEvent::Stalled { job_id } => {
                    self.inner.metrics.stalled.with_label_values(&[&queue]).inc();
                    tracing::info!(queue, job = %job_id, "job stalled (its worker died?); queued again");
                }
                bullmq::worker::WorkerEvent::Error(e) if !failing => {
                    failing = true;
                    tracing::warn!(queue, error = %e, "worker error; it retries by itself");
                }
                bullmq::worker::WorkerEvent::Completed { .. } => failing = false,
                bullmq::worker::WorkerEvent::Closed => break,
                _ => {}
            }
        }
    }
}
