//! The aggregator's own Prometheus metrics.

use event_bus::Channel;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The store operations whose failures `stats_aggregator_errors_total` counts (`op`).
pub const STORE_OPS: [&str; 6] = ["apply", "fold", "hint", "lease", "read_day", "start_position"];

/// Every metric, registered in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Events counted, by channel.
    pub events: IntCounterVec,
    /// Malformed stream entries counted and skipped, by channel and kind.
    pub malformed: IntCounterVec,
    /// Entries read again and skipped because the day's marker already covered them.
    pub skipped: IntCounter,
    /// Entries not yet aggregated, by channel (capped, see `LAG_CAP`).
    pub lag_events: IntGaugeVec,
    /// Seconds between the last aggregated entry and the stream head, by channel.
    pub lag_seconds: GaugeVec,
    /// Failed operations, by operation.
    pub errors: IntCounterVec,
    /// Entries trimmed away before they were counted (occurrences), by channel.
    pub gaps: IntCounterVec,
    /// 1 while this replica holds the channel's lease.
    pub lease_held: IntGaugeVec,
}

impl Metrics {
    /// Counts a failed store operation `op` (one of [`STORE_OPS`], whose series exist from the
    /// start).
    pub fn store_error(&self, op: &'static str) {
        debug_assert!(STORE_OPS.contains(&op), "{op} is not in STORE_OPS");
        self.errors.with_label_values(&[op]).inc();
    }

    /// New metrics, with a series per channel already present (0 rather than absent).
    pub fn new(channels: &[Channel]) -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let gauge_vec = |name: &str, help: &str| {
            let m = IntGaugeVec::new(Opts::new(name, help), &["channel"]).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let lag_seconds = GaugeVec::new(
            Opts::new(
                "stats_aggregator_lag_seconds",
                "Seconds between the last aggregated entry and the stream head",
            ),
            &["channel"],
        )
        .expect("metric");
        registry.register(Box::new(lag_seconds.clone())).expect("register");
        let skipped = IntCounter::new(
            "stats_aggregator_entries_skipped_total",
            "Entries read again and skipped because the day's marker already covered them",
        )
        .expect("metric");
        registry.register(Box::new(skipped.clone())).expect("register");
        let m = Metrics {
            events: counter_vec("stats_aggregator_events_total", "Events counted", &["channel"]),
            malformed: counter_vec(
                "stats_aggregator_malformed_total",
                "Malformed stream entries counted and skipped",
                &["channel", "kind"],
            ),
            skipped,
            lag_events: gauge_vec(
                "stats_aggregator_lag_events",
                "Entries not yet aggregated (capped at 10000)",
            ),
            lag_seconds,
            errors: counter_vec(
                "stats_aggregator_errors_total",
                "Failed store or bus operations",
                &["op"],
            ),
            gaps: counter_vec(
                "stats_aggregator_gaps_total",
                "Times entries were trimmed before they were counted",
                &["channel"],
            ),
            lease_held: gauge_vec(
                "stats_aggregator_lease_held",
                "1 while this replica aggregates the channel",
            ),
            registry,
        };
        for op in STORE_OPS {
            m.errors.with_label_values(&[op]);
        }
        for c in channels {
            m.events.with_label_values(&[c.as_str()]);
            m.lag_events.with_label_values(&[c.as_str()]);
            m.lag_seconds.with_label_values(&[c.as_str()]);
            m.gaps.with_label_values(&[c.as_str()]);
            m.lease_held.with_label_values(&[c.as_str()]);
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        service_kit::render_metrics(&self.registry)
    }
}
