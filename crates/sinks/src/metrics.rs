//! The sinks' Prometheus metrics (`docs/reference.md`, "Metrics").

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every metric; series per destination are created at start.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `sinks_queued_total{destination}`: deliveries queued (once per event and destination).
    pub queued: IntCounterVec,
    /// `sinks_deliveries_total{destination, outcome}`: attempts by outcome (`accepted`, `retry`,
    /// `disabled`, `dead_letter`; `unsubscribed`: a Web Push subscription was gone).
    pub deliveries: IntCounterVec,
    /// `sinks_delivery_seconds{destination}`: from the event's timestamp to the destination's accept.
    pub latency: HistogramVec,
    /// `sinks_backlog{destination}`: deliveries waiting.
    pub backlog: IntGaugeVec,
    /// `sinks_disabled{destination}`: 1 while the destination is disabled.
    pub disabled: IntGaugeVec,
    /// `sinks_dead_letters_total{destination}`: deliveries given up.
    pub dead_letters: IntCounterVec,
    /// `sinks_outbox_overflow_total{destination}`: deliveries moved from the outbox to the dead
    /// letters as new ones were queued, because it held `delivery.max_backlog` or they were
    /// older than `delivery.max_age_secs` (a disabled or stalled destination).
    pub overflow: IntCounterVec,
    /// `sinks_lag_seconds{channel}`: how far behind the channel's newest event the reader is.
    pub lag: prometheus::GaugeVec,
    /// `sinks_held_total{route}`: events an escalating route held.
    pub held: IntCounterVec,
    /// `sinks_escalations_total{route, decision}`: held events decided (`sent`, `suppressed`,
    /// `dropped`).
    pub escalations: IntCounterVec,
}

impl Metrics {
    /// The metrics, with every destination's and channel's series at 0.
    pub fn new(destinations: &[&str], channels: &[&str]) -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["destination"]).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sinks_delivery_seconds",
                "From an event's timestamp to its destination's accept",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["destination"],
        )
        .expect("metric");
        registry.register(Box::new(latency.clone())).expect("register");
        let lag = prometheus::GaugeVec::new(
            Opts::new("sinks_lag_seconds", "Behind the channel's newest event"),
            &["channel"],
        )
        .expect("metric");
        registry.register(Box::new(lag.clone())).expect("register");
        let m = Metrics {
            queued: counter("sinks_queued_total", "Deliveries queued", &["destination"]),
            deliveries: counter(
                "sinks_deliveries_total",
                "Delivery attempts by outcome",
                &["destination", "outcome"],
            ),
            latency,
            backlog: gauge("sinks_backlog", "Deliveries waiting"),
            disabled: gauge("sinks_disabled", "1 while the destination is disabled"),
            dead_letters: counter("sinks_dead_letters_total", "Deliveries given up", &["destination"]),
            overflow: counter(
                "sinks_outbox_overflow_total",
                "Deliveries moved to the dead letters to keep the outbox bounded",
                &["destination"],
            ),
            lag,
            held: counter("sinks_held_total", "Events an escalating route held", &["route"]),
            escalations: counter(
                "sinks_escalations_total",
                "Held events decided: sent, or suppressed by an acknowledgement",
                &["route", "decision"],
            ),
            registry,
        };
        for d in destinations {
            m.queued.with_label_values(&[d]);
            m.backlog.with_label_values(&[d]);
            m.disabled.with_label_values(&[d]);
            m.dead_letters.with_label_values(&[d]);
            m.overflow.with_label_values(&[d]);
            m.latency.with_label_values(&[d]);
            for o in ["accepted", "retry", "disabled", "dead_letter", "unsubscribed"] {
                m.deliveries.with_label_values(&[d, o]);
            }
        }
        for c in channels {
            m.lag.with_label_values(&[c]);
        }
        m
    }

    /// Creates the escalating routes' series at 0.
    pub fn escalating(&self, routes: &[&str]) {
        for r in routes {
            self.held.with_label_values(&[r]);
            for d in ["sent", "suppressed", "dropped"] {
                self.escalations.with_label_values(&[r, d]);
            }
        }
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        service_kit::render_metrics(&self.registry)
    }
}
