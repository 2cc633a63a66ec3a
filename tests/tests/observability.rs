//! The Grafana dashboard (`deploy/grafana/rakuda-realtime.json`) and the alert rules
//! (`deploy/k8s/base/alerts.yaml`) name only metrics the services really export: a gateway, a
//! worker-emitter and a stats-aggregator run on one redis-server, an event goes through, and
//! every metric name in every expression must be on one of their `/metrics` pages, and every
//! metric on those pages must be in the reference's table (`docs/reference.md`, Metrics).

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value};
use testkit::{
    process::{workspace_bin, Service},
    sse::SseStream,
    RedisServer,
};

const T: Duration = Duration::from_secs(30);

/// PromQL words that are not metric names: aggregations (`sum by (x) (...)` puts the label
/// list between the word and its parenthesis) and keywords.
const KEYWORDS: [&str; 23] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn service(bin: &str, env: &[(&str, String)]) -> Service {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    Service::start(&workspace_bin(bin), &env).unwrap_or_else(|e| panic!("start {bin}: {e}"))
}

/// The metric names an expression reads: identifiers outside strings, label matchers, ranges
/// and `by (...)` lists that are not functions, aggregations or keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let skip_group = |i: &mut usize, open: char, close: char| {
        let mut depth = 0;
        while *i < chars.len() {
            if chars[*i] == open {
                depth += 1;
            } else if chars[*i] == close {
                depth -= 1;
                if depth == 0 {
                    *i += 1;
                    return;
                }
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            skip_group(&mut i, '{', '}');
        } else if c == '[' {
            skip_group(&mut i, '[', ']');
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if word == "by" || word == "without" || word == "on" || word == "ignoring" {
                // A label list, not names.
                i = j;
                skip_group(&mut i, '(', ')');
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else if c.is_ascii_digit() {
            // A number or a duration (5m, 0.99, 1e3).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every expression of the dashboard and of the alert rules, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/rakuda-realtime.json")).unwrap())
            .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!("dashboard panel {:?}", p["title"].as_str().unwrap()),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    // The rules file's `expr:` values, on one line or as a `|` block.
    let rules = std::fs::read_to_string(root().join("deploy/k8s/base/alerts.yaml")).unwrap();
    let lines: Vec<&str> = rules.lines().collect();
    let mut alert = String::new();
    for (n, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("- alert: ") {
            alert = a.to_owned();
        }
        let Some(v) = t.strip_prefix("expr: ") else { continue };
        let indent = line.len() - t.len();
        let expr = if v.trim() == "|" {
            lines[n + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            v.to_owned()
        };
        out.push((format!("alert {alert}"), expr));
    }
    out
}

/// The sample names on a `/metrics` page, and its metric families (`# TYPE` lines).
async fn exported(base: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    let families = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    (samples, families)
}

#[test]
fn names_are_read_from_expressions() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, queue) (rate(worker_job_duration_seconds_bucket{queue="a b"}[5m])))"#
        ),
        ["worker_job_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("sum(up) == 0 or absent(realtime_upstream_up) / on (instance) x:y"),
        ["up", "realtime_upstream_up", "x:y"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let log = ("RUST_LOG", "warn".to_owned());
    let gw = service(
        "sse-gateway",
        &[
            ("REDIS_URL", url.clone()),
            ("AUTH_MODE", "none".into()),
            ("SSE_DEBOUNCE_WINDOW", "0".into()),
            log.clone(),
        ],
    );
    let worker = service(
        "worker-emitter",
        &[("REDIS_URL", url.clone()), ("INSTANCE_ID", "w-obs".into()), log.clone()],
    );
    let agg = service(
        "stats-aggregator",
        &[
            ("REDIS_URL", url.clone()),
            ("RAKUDA__POLL_INTERVAL_MS", "20".into()),
            log,
        ],
    );
    // One event through the gateway, so the per-type delivery series exists.
    let mut sse = SseStream::connect(&format!("{}/api/realtime/events?channels=orders", gw.base()), None)
        .await
        .unwrap();
    let event =
        json!({"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "ord_obs", "action": "created"}});
    let r = reqwest::Client::new()
        .post(format!("{}/api/realtime/publish", gw.base()))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(sse.next_message(T).await.is_some(), "the event did not arrive");

    let mut names = BTreeSet::new();
    let mut families = BTreeSet::new();
    for s in [&gw, &worker, &agg] {
        let (samples, f) = exported(&s.base()).await;
        names.extend(samples);
        families.extend(f);
    }
    // Every exported metric is in the reference's table.
    let reference = std::fs::read_to_string(root().join("docs/reference.md")).unwrap();
    let undocumented: Vec<&String> = families
        .iter()
        .filter(|f| !reference.contains(&format!("| `{f}` |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from docs/reference.md, Metrics: {undocumented:?}"
    );
    assert!(families.len() >= 30, "{families:?}");
    let exprs = expressions();
    assert!(
        exprs.len() >= 20,
        "{} expressions: the files were not read",
        exprs.len()
    );
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in &exprs {
        for name in metric_names(expr) {
            if !names.contains(&name) {
                missing.push(format!("{place}: {name} (in {expr})"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "names no service exports:\n{}\nexported: {names:?}",
        missing.join("\n")
    );
    for prefix in ["realtime_", "worker_", "stats_aggregator_"] {
        assert!(
            used.iter().any(|n| n.starts_with(prefix)),
            "nothing of {prefix}* is shown"
        );
    }
}
