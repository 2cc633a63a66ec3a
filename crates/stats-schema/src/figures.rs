//! One gateway's figures, as it writes them to `<prefix>gateway:<instance>` on every heartbeat
//! and as the stats-aggregator and `/api/realtime/stats` read them back. Counters are cumulative
//! since the gateway process started (`started_at`); a new `started_at` means they restarted
//! from zero.

use event_bus::Figures;

use crate::latency::Buckets;

/// Field-name prefix of a latency bucket: `latency_le_<upper bound in seconds>`.
pub const LATENCY_BUCKET: &str = "latency_le_";

/// The cumulative counters of one gateway process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Streams opened.
    pub connections_total: u64,
    /// Streams opened with a cursor (a client resuming).
    pub reconnects_total: u64,
    /// Events written to clients.
    pub delivered_total: u64,
    /// Clients cut for not keeping up.
    pub slow_consumer_disconnects_total: u64,
    /// Grouped messages written.
    pub groups_coalesced_total: u64,
    /// RESYNC messages written.
    pub resyncs_total: u64,
}

impl Counters {
    /// Each counter with its field name.
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("connections_total", self.connections_total),
            ("reconnects_total", self.reconnects_total),
            ("delivered_total", self.delivered_total),
            ("slow_consumer_disconnects_total", self.slow_consumer_disconnects_total),
            ("groups_coalesced_total", self.groups_coalesced_total),
            ("resyncs_total", self.resyncs_total),
        ]
    }

    fn set(&mut self, field: &str, value: u64) {
        let slot = match field {
            "connections_total" => &mut self.connections_total,
            "reconnects_total" => &mut self.reconnects_total,
            "delivered_total" => &mut self.delivered_total,
            "slow_consumer_disconnects_total" => &mut self.slow_consumer_disconnects_total,
            "groups_coalesced_total" => &mut self.groups_coalesced_total,
            "resyncs_total" => &mut self.resyncs_total,
            _ => return,
        };
        *slot = value;
    }
}

/// One gateway's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayFigures {
    /// `INSTANCE_ID`.
    pub instance: String,
    /// When the process started (RFC 3339).
    pub started_at: String,
    /// When these figures were taken (RFC 3339).
    pub updated_at: String,
    /// Streams open now.
    pub connections: u64,
    /// Whether its upstream subscription works.
    pub upstream_up: bool,
    /// Cumulative counters.
    pub counters: Counters,
    /// Delivery latency (event id time to write), cumulative buckets.
    pub latency: Buckets,
    /// Deliveries measured for latency.
    pub latency_count: u64,
    /// Their latencies added up, in seconds.
    pub latency_sum_seconds: f64,
}

impl GatewayFigures {
    /// As the hash is written.
    pub fn to_map(&self) -> Figures {
        let mut f = Figures::new();
        let mut put = |k: &str, v: String| {
            f.insert(k.to_owned(), v);
        };
        put("instance", self.instance.clone());
        put("started_at", self.started_at.clone());
        put("updated_at", self.updated_at.clone());
        put("connections", self.connections.to_string());
        put("upstream_up", u8::from(self.upstream_up).to_string());
        for (k, v) in self.counters.fields() {
            put(k, v.to_string());
        }
        for (bound, count) in &self.latency.0 {
            put(&format!("{LATENCY_BUCKET}{bound}"), count.to_string());
        }
        put("latency_count", self.latency_count.to_string());
        put("latency_sum_seconds", format!("{:.6}", self.latency_sum_seconds));
        f
    }

    /// Read back from a hash; missing or unreadable numbers are 0.
    pub fn from_map(f: &Figures) -> GatewayFigures {
        let text = |k: &str| f.get(k).cloned().unwrap_or_default();
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut counters = Counters::default();
        for (k, v) in f {
            if let Ok(n) = v.parse::<u64>() {
                counters.set(k, n);
            }
        }
        GatewayFigures {
            instance: text("instance"),
            started_at: text("started_at"),
            updated_at: text("updated_at"),
            connections: num("connections"),
            upstream_up: num("upstream_up") == 1,
            counters,
            latency: Buckets::from_fields(LATENCY_BUCKET, f),
            latency_count: num("latency_count"),
            latency_sum_seconds: f.get("latency_sum_seconds").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        }
    }

    /// The cumulative values the stats-aggregator folds into a day (as `gw:<field>`): the
    /// counters, the latency buckets and their count.
    pub fn folded(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .counters
            .fields()
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect();
        v.extend(
            self.latency
                .0
                .iter()
                .map(|(bound, count)| (format!("{LATENCY_BUCKET}{bound}"), *count)),
        );
        v.push(("latency_count".into(), self.latency_count));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_round_trip_through_their_hash() {
        let g = GatewayFigures {
            instance: "gw-1".into(),
            started_at: "2026-12-01T00:00:00.000Z".into(),
            updated_at: "2026-12-01T00:00:05.000Z".into(),
            connections: 3,
            upstream_up: true,
            counters: Counters {
                delivered_total: 70,
                resyncs_total: 1,
                ..Default::default()
            },
            latency: Buckets(vec![(0.005, 60), (1.0, 70)]),
            latency_count: 70,
            latency_sum_seconds: 0.25,
        };
        let map = g.to_map();
        assert_eq!(map["latency_le_0.005"], "60");
        assert_eq!(map["latency_le_1"], "70");
        assert_eq!(map["upstream_up"], "1");
        assert_eq!(GatewayFigures::from_map(&map), g);
        let folded = g.folded();
        assert!(folded.contains(&("delivered_total".into(), 70)));
        assert!(folded.contains(&("latency_le_0.005".into(), 60)));
        assert!(folded.contains(&("latency_count".into(), 70)));
        assert!(folded.iter().all(|(k, _)| k != "connections" && k != "instance"));
    }
}
