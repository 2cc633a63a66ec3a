//! A daily hash read back, as the JSON of `proto-schemas/daily-stats.schema.json`, and a range
//! of days with their sum (`proto-schemas/stats-range.schema.json`).

use std::collections::HashMap;

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use crate::{latency::Buckets, time::at};

/// Longest span a range answers, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// A daily hash as JSON.
pub fn daily_json(day: NaiveDate, hash: &HashMap<String, String>) -> Value {
    let num = |k: &str| hash.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let group = |prefix: &str| -> Map<String, Value> {
        let mut m: Vec<(&str, i64)> = hash
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v.parse::<i64>().ok()?)))
            .collect();
        m.sort();
        m.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect()
    };
    let hours: Vec<i64> = (0..24).map(|h| num(&format!("hour:{h:02}"))).collect();
    let time = |k: &str| {
        hash.get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| json!(event_bus::Timestamp(at(ms)).to_string()))
            .unwrap_or(Value::Null)
    };
    let mut malformed = group("malformed:");
    malformed.insert("total".into(), json!(num("malformed")));
    let progress: Map<String, Value> = hash
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("progress:")?.to_owned(), json!(v))))
        .collect();

    // Gateways: the day's folded histogram, so percentiles are of all deliveries of the day.
    let buckets = Buckets::from_fields("gw:latency_le_", hash);
    let count = num("gw:latency_count").max(0) as u64;
    let quantile = |q: f64| buckets.quantile_ms(count, q).map_or(Value::Null, |v| json!(v));
    let opened = num("gw:connections_total");
    let reconnects = num("gw:reconnects_total");
    json!({
        "date": day.format("%Y-%m-%d").to_string(),
        "events": num("events"),
        "by_type": group("type:"),
        "by_channel": group("channel:"),
        "by_action": group("action:"),
        "hours": hours,
        "first_event_at": time("first_event_ms"),
        "last_event_at": time("last_event_ms"),
        "late": num("late"),
        "malformed": malformed,
        "progress": progress,
        "gateways": {
            "connections_peak": num("gw:connections_peak"),
            "connections_peak_at": time("gw:connections_peak_ms"),
            "connections_opened": opened,
            "reconnects": reconnects,
            "reconnect_rate": if opened > 0 { json!(reconnects as f64 / opened as f64) } else { Value::Null },
            "delivered": num("gw:delivered_total"),
            "slow_consumer_disconnects": num("gw:slow_consumer_disconnects_total"),
            "latency_p50_ms": quantile(0.5),
            "latency_p99_ms": quantile(0.99),
        },
    })
}

/// Days `from..=to` (each as [`daily_json`] gives it) and their totals.
pub fn range_json(from: NaiveDate, to: NaiveDate, days: Vec<Value>) -> Value {
    let mut total = Map::new();
    let mut events = 0i64;
    let mut late = 0i64;
    let mut malformed = 0i64;
    for j in &days {
        events += j["events"].as_i64().unwrap_or(0);
        late += j["late"].as_i64().unwrap_or(0);
        malformed += j["malformed"]["total"].as_i64().unwrap_or(0);
        for group in ["by_type", "by_channel", "by_action"] {
            let sums = total
                .entry(group)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("object");
            for (k, v) in j[group].as_object().into_iter().flatten() {
                let cur = sums.get(k).and_then(Value::as_i64).unwrap_or(0);
                sums.insert(k.clone(), json!(cur + v.as_i64().unwrap_or(0)));
            }
        }
    }
    total.insert("events".into(), json!(events));
    total.insert("late".into(), json!(late));
    total.insert("malformed".into(), json!(malformed));
    json!({
        "from": from.format("%Y-%m-%d").to_string(),
        "to": to.format("%Y-%m-%d").to_string(),
        "days": days,
        "total": total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_day;

    #[test]
    fn json_merges_buckets_and_names_hours() {
        let h: HashMap<String, String> = [
            ("events", "3"),
            ("type:ORDER_RECEIVED", "3"),
            ("hour:05", "3"),
            ("gw:latency_le_0.001", "99"),
            ("gw:latency_le_1", "100"),
            ("gw:latency_count", "100"),
            ("gw:connections_total", "4"),
            ("gw:reconnects_total", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let j = daily_json(parse_day("2026-11-23").unwrap(), &h);
        assert_eq!(j["hours"][5], 3);
        assert_eq!(j["by_type"]["ORDER_RECEIVED"], 3);
        assert_eq!(j["gateways"]["latency_p50_ms"], 1.0);
        assert_eq!(j["gateways"]["latency_p99_ms"], 1.0);
        assert_eq!(j["gateways"]["reconnect_rate"], 0.25);
        let day = parse_day("2026-11-23").unwrap();
        let r = range_json(day, day, vec![j.clone(), j]);
        assert_eq!(r["total"]["events"], 6);
        assert_eq!(r["total"]["by_type"]["ORDER_RECEIVED"], 6);
    }
}
