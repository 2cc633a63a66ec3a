//! Cluster figures: each gateway writes its live figures to `rakuda:realtime:gateway:<instance>`
//! (a hash that expires unless refreshed) on a heartbeat, and `/api/realtime/stats`
//! (`crate::http::stats`) adds up every instance's. Counters are cumulative since the instance started and the delivery
//! latency is kept as histogram buckets, so readers (this endpoint, the stats-aggregator)
//! merge buckets for percentiles instead of averaging averages.

use std::time::Duration;

use event_bus::{Presence, Timestamp};
use prometheus::core::Collector;
use stats_schema::{figures::Counters, latency::Buckets, GatewayFigures};
use tokio_util::sync::CancellationToken;

use event_bus::AnyBus;

use crate::{hub::fan_out::Hub, telemetry::metrics::Metrics};

/// The presence kind: keys are `<prefix>gateway:<instance>`.
pub use stats_schema::keys::GATEWAY_KIND as KIND;

/// A counter summed over its labels.
fn total(c: &prometheus::IntCounterVec) -> u64 {
    c.collect()
        .iter()
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum()
}

/// This instance's figures now.
pub fn current(m: &Metrics, hub: &Hub, instance: &str, started_at: &str) -> GatewayFigures {
    let mut f = GatewayFigures {
        instance: instance.to_owned(),
        started_at: started_at.to_owned(),
        updated_at: Timestamp::now().to_string(),
        connections: hub.connections() as u64,
        upstream_up: m.upstream_up.get() == 1,
        counters: Counters {
            connections_total: total(&m.connections_total),
            reconnects_total: m.reconnects_with_cursor.get(),
            delivered_total: total(&m.events_delivered),
            slow_consumer_disconnects_total: m.slow_consumer_disconnects.get(),
            groups_coalesced_total: m.groups_coalesced.get(),
            resyncs_total: m.resyncs.get(),
        },
        ..Default::default()
    };
    for family in m.delivery_latency.collect() {
        for metric in family.get_metric() {
            let h = metric.get_histogram();
            f.latency = Buckets(
                h.get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect(),
            );
            f.latency_count = h.get_sample_count();
            f.latency_sum_seconds = h.get_sample_sum();
        }
    }
    f
}

/// Sheds the streams above this instance's fair share, from every instance's figures.
async fn rebalance(bus: &AnyBus, metrics: &Metrics, hub: &Hub, instance: &str, ratio: f64) {
    let Ok(roster) = bus.roster(KIND).await else { return };
    let others: Vec<u64> = roster
        .iter()
        .filter(|(name, f)| name != instance && f.get("upstream_up").is_none_or(|u| u == "true" || u == "1"))
        .filter_map(|(_, f)| f.get("connections")?.parse().ok())
        .collect();
    let own = hub.connections();
    let n = crate::hub::balance::to_shed(own, &others, ratio);
    if n > 0 {
        let told = hub.shed(n);
        metrics.streams_shed.inc_by(told as u64);
        if told > 0 {
            tracing::info!(own, others = ?others, told, "above the fair share: streams told to reconnect elsewhere");
        }
    }
}

/// Refreshes this instance's figures every `interval` (they expire after three missed beats),
/// and sheds streams above `shed_above` times its fair share ([`crate::hub::balance`]);
/// withdraws them when draining starts, so the cluster total drops at once.
pub async fn heartbeat(
    bus: AnyBus,
    metrics: Metrics,
    hub: Hub,
    instance: String,
    interval: Duration,
    shed_above: f64,
    stop: CancellationToken,
) {
    let started_at = Timestamp::now().to_string();
    let mut tick = tokio::time::interval(interval);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let f = current(&metrics, &hub, &instance, &started_at).to_map();
        match bus.announce(KIND, &instance, &f, interval * 3).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "could not write this gateway's figures; retrying each beat");
            }
            Err(_) => {}
        }
        if shed_above > 0.0 {
            rebalance(&bus, &metrics, &hub, &instance, shed_above).await;
        }
    }
    if let Err(e) = bus.withdraw(KIND, &instance).await {
        tracing::debug!(error = %e, "could not withdraw figures; they expire by themselves");
    }
}
