//! `stats-aggregator report --date YYYY-MM-DD [--to YYYY-MM-DD] [--json]`: a day (or the days
//! of a range) as a readable table, straight from the daily hashes.

use std::fmt::Write;

use serde_json::Value;

use crate::{config::AggregatorConfig, day::parse_day, store::Store};

/// Parses the arguments, reads the store, and renders the report.
pub async fn main(config: AggregatorConfig, args: &[String]) -> Result<String, String> {
    let (mut from, mut to, mut as_json) = (None, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--date" | "--from" => from = Some(parse_day(&value(a)?)?),
            "--to" => to = Some(parse_day(&value(a)?)?),
            "--json" => as_json = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let from = from.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let to = to.unwrap_or(from);
    if config.bus.redis_url.is_none() {
        return Err("REDIS_URL is not set: the daily statistics live in Redis".into());
    }
    let bus = event_bus::connect(config.bus)
        .await
        .map_err(|e| format!("cannot reach Redis: {e}"))?;
    let store = Store::for_bus(&bus);
    let range = stats_schema::range(&store.days(), from, to)
        .await
        .map_err(|e| e.to_string())?;
    if as_json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&range).expect("json")));
    }
    let mut out = String::new();
    for day in range["days"].as_array().into_iter().flatten() {
        out.push_str(&render_day(day));
    }
    if from != to {
        let _ = writeln!(out, "== {from} .. {to}: {} events in total", range["total"]["events"]);
    }
    Ok(out)
}

/// One day as text.
pub fn render_day(d: &Value) -> String {
    let mut out = String::new();
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let _ = writeln!(out, "== {} (UTC)", d["date"].as_str().unwrap_or("?"));
    let _ = writeln!(
        out,
        "events {:>10}   first {}   last {}",
        n(&d["events"]),
        d["first_event_at"].as_str().unwrap_or("-"),
        d["last_event_at"].as_str().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "late   {:>10}   malformed {}",
        n(&d["late"]),
        n(&d["malformed"]["total"])
    );
    for (title, group) in [("type", "by_type"), ("channel", "by_channel"), ("action", "by_action")] {
        let Some(m) = d[group].as_object().filter(|m| !m.is_empty()) else {
            continue;
        };
        let _ = writeln!(out, "\n  {title:<24} {:>10}", "events");
        for (k, v) in m {
            let _ = writeln!(out, "  {k:<24} {:>10}", n(v));
        }
    }
    let hours: Vec<i64> = d["hours"].as_array().into_iter().flatten().map(n).collect();
    let max = hours.iter().copied().max().unwrap_or(0);
    if max > 0 {
        let _ = writeln!(out, "\n  hour  events");
        for (h, c) in hours.iter().enumerate() {
            let bar = "#".repeat(((*c as f64 / max as f64) * 40.0).ceil() as usize);
            let _ = writeln!(out, "  {h:02}   {c:>8} {bar}");
        }
    }
    let g = &d["gateways"];
    let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x} ms"));
    let _ = writeln!(
        out,
        "\n  gateways: peak {} connections; {} opened, {} reconnects (rate {}); {} delivered; \
         latency p50 {} p99 {}; {} slow-consumer disconnects\n",
        n(&g["connections_peak"]),
        n(&g["connections_opened"]),
        n(&g["reconnects"]),
        g["reconnect_rate"]
            .as_f64()
            .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        n(&g["delivered"]),
        ms(&g["latency_p50_ms"]),
        ms(&g["latency_p99_ms"]),
        n(&g["slow_consumer_disconnects"]),
    );
    out
}
