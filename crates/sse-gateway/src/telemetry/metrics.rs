//! Prometheus metrics of one gateway (its own registry, so tests can run several side by side).

use event_bus::{MalformedKind, StatsSnapshot};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The gateway's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open streams, by transport (`sse`, `ws`).
    pub connections_active: IntGaugeVec,
    /// Streams opened, by transport.
    pub connections_total: IntCounterVec,
    /// Streams opened with a cursor (a reconnect that resumes).
    pub reconnects_with_cursor: IntCounter,
    /// Events written to streams, by type and transport.
    pub events_delivered: IntCounterVec,
    /// Event stored (its id's time) to written to the stream.
    pub delivery_latency: Histogram,
    /// Messages that grouped several events.
    pub groups_coalesced: IntCounter,
    /// Streams cut because their client could not keep up.
    pub slow_consumer_disconnects: IntCounter,
    /// Resync messages sent.
    pub resyncs: IntCounter,
    /// State events put aside latest-wins for lagging clients (superseded ones never sent).
    pub events_collapsed: IntCounter,
    /// Whether the upstream subscription works (1) or not (0).
    pub upstream_up: IntGauge,
    /// Channels the upstream subscription follows now.
    pub channels_followed: IntGauge,
    /// Streams told to reconnect elsewhere because this instance held more than its share.
    pub streams_shed: IntCounter,
    /// Notifications stored (`POST /api/notifications`, repeats of an idempotency key not
    /// counted).
    pub notifications_created: IntCounter,
    /// Notifications marked read (one by one or all at once).
    pub notifications_read: IntCounter,
    /// Streams whose queue filled in a burst: they read what they missed from the store, in
    /// place, instead of being cut.
    pub streams_behind: IntCounter,
    /// Acknowledgements recorded (repeats not counted), by kind (`seen`, `acknowledged`).
    pub acks: IntCounterVec,
    /// WebSocket sessions open (each also counts in the stream metrics while subscribed).
    pub ws_sessions_active: IntGauge,
    /// WebSocket sessions opened.
    pub ws_sessions_total: IntCounter,
    /// WebSocket commands received.
    pub ws_commands: IntCounter,
    /// Connections the gateway closed to bound them, by reason (see [`Closed`]).
    pub connections_closed: IntCounterVec,
}

/// Why the gateway closed a connection on its own (`realtime_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// A write made no progress for `write_timeout_ms`: the client stopped reading.
    WriteTimeout,
    /// No complete request within `request_timeout_ms` of connecting.
    RequestTimeout,
    /// `max_pending_connections` had not sent a request yet: refused at accept.
    PendingFull,
    /// A request head over the limit (431).
    HeadTooLarge,
    /// A WebSocket session with no stream for `ws_streamless_ms`.
    Streamless,
    /// A stream client held more than `slow_unsent_bytes` unsent for `slow_unsent_ms`.
    TooSlow,
}

impl Closed {
    /// Every reason, for pre-registering the label values.
    pub const ALL: [Closed; 6] = [
        Closed::WriteTimeout,
        Closed::RequestTimeout,
        Closed::PendingFull,
        Closed::HeadTooLarge,
        Closed::Streamless,
        Closed::TooSlow,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::WriteTimeout => "write_timeout",
            Closed::RequestTimeout => "request_timeout",
            Closed::PendingFull => "pending_full",
            Closed::HeadTooLarge => "head_too_large",
            Closed::Streamless => "streamless",
            Closed::TooSlow => "too_slow",
        }
    }
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new(instance: &str) -> Self {
        let registry =
            Registry::new_custom(None, Some([("instance".to_owned(), instance.to_owned())].into())).expect("registry");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            for t in crate::telemetry::transport::Transport::ALL {
                g.with_label_values(&[t.as_str()]);
            }
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            for t in crate::telemetry::transport::Transport::ALL {
                c.with_label_values(&[t.as_str()]);
            }
            c
        };
        let events_delivered = IntCounterVec::new(
            Opts::new(
                "realtime_events_delivered_total",
                "Events written to streams, by type and transport",
            ),
            &["type", "transport"],
        )
        .expect("metric");
        registry.register(Box::new(events_delivered.clone())).expect("register");
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "realtime_delivery_latency_seconds",
                "From the event being stored to it being written to a stream",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("metric");
        registry.register(Box::new(delivery_latency.clone())).expect("register");
        Metrics {
            connections_active: gauge_vec(
                "realtime_connections_active",
                "Open streams, by transport (sse, ws)",
                &["transport"],
            ),
            connections_total: counter_vec(
                "realtime_connections_total",
                "Streams opened, by transport (sse, ws)",
                &["transport"],
            ),
            reconnects_with_cursor: counter(
                "realtime_reconnects_with_cursor_total",
                "SSE streams opened with Last-Event-ID or last_event_id",
            ),
            events_delivered,
            delivery_latency,
            groups_coalesced: counter(
                "realtime_groups_coalesced_total",
                "Messages that grouped several events",
            ),
            slow_consumer_disconnects: counter(
                "realtime_slow_consumer_disconnects_total",
                "Streams cut because the client could not keep up",
            ),
            resyncs: counter("realtime_resyncs_total", "RESYNC messages sent"),
            events_collapsed: counter(
                "realtime_events_collapsed_total",
                "State events put aside latest-wins for lagging clients",
            ),
            upstream_up: gauge("realtime_upstream_up", "1 while the upstream subscription works"),
            streams_shed: counter(
                "realtime_streams_shed_total",
                "Streams told to reconnect through the load balancer because this instance held more than its fair share",
            ),
            channels_followed: gauge(
                "realtime_upstream_channels_followed",
                "Channels the upstream subscription follows now (on demand: those a stream needs, and those within their grace)",
            ),
            notifications_created: counter("realtime_notifications_created_total", "Per-user notifications stored"),
            notifications_read: counter(
                "realtime_notifications_read_total",
                "Per-user notifications marked read",
            ),
            streams_behind: counter(
                "realtime_streams_behind_total",
                "Streams whose queue filled: they caught up from the store in place instead of being cut",
            ),
            acks: {
                let c = IntCounterVec::new(
                    Opts::new("realtime_acks_total", "Acknowledgements recorded, by kind"),
                    &["kind"],
                )
                .expect("metric");
                registry.register(Box::new(c.clone())).expect("register");
                for k in ["seen", "acknowledged"] {
                    c.with_label_values(&[k]);
                }
                c
            },
            ws_sessions_active: gauge("realtime_ws_sessions_active", "Open WebSocket sessions"),
            ws_sessions_total: counter("realtime_ws_sessions_total", "WebSocket sessions opened"),
            ws_commands: counter("realtime_ws_commands_total", "WebSocket commands received"),
            connections_closed: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "realtime_connections_closed_total",
                        "Connections the gateway closed to bound them, by reason",
                    ),
                    &["reason"],
                )
                .expect("metric");
                registry.register(Box::new(c.clone())).expect("register");
                for r in Closed::ALL {
                    c.with_label_values(&[r.as_str()]);
                }
                c
            },
            registry,
        }
    }

    /// Adds the bus' own counters, read at scrape time.
    pub fn register_bus(&self, stats: impl Fn() -> StatsSnapshot + Send + Sync + 'static) {
        let _ = self.registry.register(Box::new(BusCollector::new(stats)));
    }

    /// Counts a connection closed for `reason`.
    pub fn closed(&self, reason: Closed) {
        self.connections_closed.with_label_values(&[reason.as_str()]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        service_kit::render_metrics(&self.registry)
    }
}

struct BusCollector<F> {
    stats: F,
    malformed: IntCounterVec,
    adopted: IntCounter,
    reconnects: IntCounter,
    gaps: IntCounter,
    resubscribes: IntCounter,
}

impl<F> BusCollector<F> {
    fn new(stats: F) -> Self {
        BusCollector {
            stats,
            malformed: IntCounterVec::new(
                Opts::new("realtime_malformed_events_total", "Malformed events skipped, by kind"),
                &["kind"],
            )
            .expect("metric"),
            adopted: IntCounter::new(
                "realtime_plain_publishes_adopted_total",
                "Node-style plain PUBLISHes this process stored in a stream",
            )
            .expect("metric"),
            reconnects: IntCounter::new("realtime_upstream_reconnects_total", "Upstream reader reconnections")
                .expect("metric"),
            gaps: IntCounter::new(
                "realtime_upstream_gaps_filled_total",
                "Times the upstream subscription read a stream to fill a gap in the announcements",
            )
            .expect("metric"),
            resubscribes: IntCounter::new(
                "realtime_upstream_resubscribes_total",
                "Times the upstream subscription subscribed a shard channel again (its announcements were missing: a reshard)",
            )
            .expect("metric"),
        }
    }
}

impl<F: Fn() -> StatsSnapshot + Send + Sync> Collector for BusCollector<F> {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.malformed.desc();
        d.extend(self.adopted.desc());
        d.extend(self.reconnects.desc());
        d.extend(self.gaps.desc());
        d.extend(self.resubscribes.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = (self.stats)();
        for kind in MalformedKind::ALL {
            let c = self.malformed.with_label_values(&[kind.as_str()]);
            c.inc_by(s.malformed(kind).saturating_sub(c.get()));
        }
        self.adopted.inc_by(s.adopted.saturating_sub(self.adopted.get()));
        self.reconnects
            .inc_by(s.reconnects.saturating_sub(self.reconnects.get()));
        self.gaps.inc_by(s.gaps_filled.saturating_sub(self.gaps.get()));
        self.resubscribes
            .inc_by(s.resubscribes.saturating_sub(self.resubscribes.get()));
        let mut out = self.malformed.collect();
        out.extend(self.adopted.collect());
        out.extend(self.reconnects.collect());
        out.extend(self.gaps.collect());
        out.extend(self.resubscribes.collect());
        out
    }
}
