//! Folding the gateways' figures into a day: each gateway's cumulative counters become deltas
//! against the baseline last folded for the same gateway process (stored in the day's hash as
//! `gwbase:<instance>:<field>`), so a restart or a new day never counts twice.

use std::collections::HashMap;

use chrono::Utc;
use event_bus::Figures;

use crate::store::GatewaySample;

/// Per gateway instance: its `started_at` and the counter values last folded in.
pub(crate) type Known = HashMap<String, (String, HashMap<String, u64>)>;

/// Baselines stored in a day's hash: instance -> (started_at, counters).
pub(crate) fn baselines(hash: &HashMap<String, String>) -> Known {
    let mut out: Known = HashMap::new();
    for (k, v) in hash {
        let Some(rest) = k.strip_prefix("gwbase:") else {
            continue;
        };
        let Some((instance, field)) = rest.rsplit_once(':') else {
            continue;
        };
        let e = out.entry(instance.to_owned()).or_default();
        if field == "started_at" {
            e.0 = v.clone();
        } else if let Ok(n) = v.parse() {
            e.1.insert(field.to_owned(), n);
        }
    }
    out
}

/// The fold's input from the gateways' figures; the fallback baseline of a counter is what was
/// last folded for the same gateway process, else 0 for a gateway started today (all of its
/// counts are today's), else its current value (what it counted before is not known to be
/// today's).
pub(crate) fn samples(roster: &[(String, Figures)], known: &Known, day_start_ms: i64) -> (Vec<GatewaySample>, u64) {
    let mut connections = 0;
    let mut out = Vec::new();
    for (instance, f) in roster {
        let f = stats_schema::GatewayFigures::from_map(f);
        connections += f.connections;
        let started_at = f.started_at.clone();
        let started_today = started_at
            .parse::<chrono::DateTime<Utc>>()
            .is_ok_and(|t| t.timestamp_millis() >= day_start_ms);
        let prev = known.get(instance).filter(|(s, _)| *s == started_at);
        let counters = f
            .folded()
            .into_iter()
            .map(|(k, value)| {
                let fallback = match prev {
                    Some((_, c)) => c.get(&k).copied().unwrap_or(0),
                    None if started_today => 0,
                    None => value,
                };
                (k, value, fallback)
            })
            .collect();
        out.push(GatewaySample {
            instance: instance.clone(),
            started_at,
            counters,
        });
    }
    (out, connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_baselines() {
        let fig = |started: &str, delivered: u64| -> Figures {
            [
                ("started_at", started.to_owned()),
                ("connections", "3".into()),
                ("delivered_total", delivered.to_string()),
                ("instance", "x".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        };
        let day_start = chrono::DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")
            .unwrap()
            .timestamp_millis();
        let roster = vec![
            ("old".to_owned(), fig("2026-11-20T10:00:00Z", 500)),
            ("new".to_owned(), fig("2026-11-23T01:00:00Z", 40)),
            ("seen".to_owned(), fig("2026-11-20T10:00:00Z", 90)),
        ];
        let mut known = HashMap::new();
        known.insert(
            "seen".to_owned(),
            (
                "2026-11-20T10:00:00Z".to_owned(),
                HashMap::from([("delivered_total".to_owned(), 70)]),
            ),
        );
        let (s, conns) = samples(&roster, &known, day_start);
        assert_eq!(conns, 9);
        let fb = |i: usize| s[i].counters.iter().find(|c| c.0 == "delivered_total").unwrap().2;
        assert_eq!((fb(0), fb(1), fb(2)), (500, 0, 70));
        assert!(s[0].counters.iter().all(|c| c.0 != "instance" && c.0 != "connections"));
    }
}
