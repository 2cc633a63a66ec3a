//! The worker's Prometheus metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Every metric, registered in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Jobs finished, by queue and outcome (`completed`, `failed`).
    pub jobs: IntCounterVec,
    /// Processing time, by queue.
    pub duration: HistogramVec,
    /// Events emitted, by queue.
    pub emitted: IntCounterVec,
    /// Emissions suppressed because the job (a retry, a re-run after a stall) had emitted
    /// already, by queue.
    pub duplicates: IntCounterVec,
    /// Decisions taken again because another job changed the entity's state first, by queue.
    pub conflicts: IntCounterVec,
    /// Jobs found stalled (their worker died or hung), by queue.
    pub stalled: IntCounterVec,
    /// Jobs that found the event bus unreachable and waited for it in place, by queue.
    pub bus_waits: IntCounterVec,
    /// Webhook requests, by marketplace and HTTP status.
    pub webhooks: IntCounterVec,
}

impl Metrics {
    /// New metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let duration = HistogramVec::new(
            HistogramOpts::new("worker_job_duration_seconds", "Time to process one job").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["queue"],
        )
        .expect("metric");
        registry.register(Box::new(duration.clone())).expect("register");
        Metrics {
            jobs: counter("worker_jobs_total", "Jobs finished", &["queue", "outcome"]),
            duration,
            emitted: counter("worker_events_emitted_total", "Events emitted", &["queue"]),
            duplicates: counter(
                "worker_duplicates_suppressed_total",
                "Emissions suppressed: the job had emitted already",
                &["queue"],
            ),
            conflicts: counter(
                "worker_state_conflicts_total",
                "Decisions taken again because the entity's state moved",
                &["queue"],
            ),
            stalled: counter("worker_jobs_stalled_total", "Jobs found stalled", &["queue"]),
            bus_waits: counter(
                "worker_bus_waits_total",
                "Jobs that waited in place for an unreachable event bus",
                &["queue"],
            ),
            webhooks: counter("worker_webhooks_total", "Webhook requests", &["marketplace", "status"]),
            registry,
        }
    }

    /// New metrics with every queue's series already present at 0 (a rate or an alert over
    /// them works before the first job, and a dashboard finds every name).
    pub fn for_queues(queues: &[&str]) -> Self {
        let m = Self::new();
        for q in queues {
            for outcome in ["completed", "failed"] {
                m.jobs.with_label_values(&[q, outcome]);
            }
            m.duration.with_label_values(&[q]);
            for c in [&m.emitted, &m.duplicates, &m.conflicts, &m.stalled, &m.bus_waits] {
                c.with_label_values(&[q]);
            }
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        service_kit::render_metrics(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
