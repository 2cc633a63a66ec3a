//! One trace from the cause to the browser. A gateway and a worker-emitter on one redis-server
//! export spans to an OTLP/HTTP receiver of this test's own. An event published over HTTP with
//! a `traceparent`, and an order job whose data carries one (`examples/node/producer.mjs`,
//! real npm `bullmq`), each reach an SSE client carrying their trace; each hop's log line names
//! the trace id (`rakuda::trace`); and the collector (`testkit::receiver`) gets the hops as spans of that trace, each
//! the child of the one before: publish -> fan-out, job -> fan-out.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{
    node::{stage, NodeScript},
    process::{env, workspace_bin, Service},
    receiver::{Receiver, Reply},
    sse::SseStream,
    RedisServer,
};

const T: Duration = Duration::from_secs(30);
const HTTP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const HTTP_PARENT: &str = "00f067aa0ba902b7";
const JOB_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const JOB_PARENT: &str = "b7ad6b7169203331";

/// A received span: service, name, trace id, span id, parent span id.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
}

fn spans(otlp: &Receiver) -> Vec<Span> {
    let mut out = Vec::new();
    for r in otlp.requests() {
        let body = r.json();
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                    out.push(Span {
                        service: service.clone(),
                        name: text("name"),
                        trace: text("traceId"),
                        id: text("spanId"),
                        parent: text("parentSpanId"),
                    });
                }
            }
        }
    }
    out
}

/// The trace context an SSE message's envelope carries: (trace id, span id).
fn carried(data: &str) -> (String, String) {
    let e: Value = serde_json::from_str(data).unwrap();
    let tp = e["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent: {e}"));
    let parts: Vec<&str> = tp.split('-').collect();
    (parts[1].to_owned(), parts[2].to_owned())
}

/// The first line of `log` that says `message` and names `trace`.
fn logged(log: &str, message: &str, trace: &str) -> bool {
    log.lines().any(|l| l.contains(message) && l.contains(trace))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_runs_from_the_request_or_job_to_the_stream_logs_and_spans() {
    // The OTLP/HTTP collector: takes every export.
    let collector = Receiver::start(|_, _| Reply::ok("{}"));
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let otlp = collector.base();
    let common = [
        ("REDIS_URL", url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        // Exported 100 ms after they end, not the SDK's 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "warn,rakuda::trace=debug"),
        ("SSE_DEBOUNCE_WINDOW", "0"),
    ];
    let mut gw_env = common.to_vec();
    gw_env.push(("AUTH_MODE", "none"));
    let gw = Service::start(&workspace_bin("sse-gateway"), &env(&gw_env)).unwrap();
    let worker = Service::start(&workspace_bin("worker-emitter"), &env(&common)).unwrap();
    let mut sse = SseStream::connect(&format!("{}/api/realtime/events?channels=orders", gw.base()), None)
        .await
        .unwrap();

    let event = r#"{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"ord_http","action":"created"}}"#;
    let r = reqwest::Client::new()
        .post(format!("{}/api/realtime/publish", gw.base()))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{HTTP_TRACE}-{HTTP_PARENT}-01"))
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = sse.next_message(T).await.expect("the published event");
    let (trace, publish_span) = carried(&m.data);
    assert_eq!(trace, HTTP_TRACE, "the request's trace: {}", m.data);
    assert_ne!(
        publish_span, HTTP_PARENT,
        "the gateway's publish span is the event's parent"
    );

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node");
    let dir = stage(&[examples.join("producer.mjs")]);
    let producer = NodeScript::start(
        dir.path().join("producer.mjs").to_str().unwrap(),
        &["traced"],
        &[
            ("REDIS_URL", url.clone()),
            ("TRACEPARENT", format!("00-{JOB_TRACE}-{JOB_PARENT}-01")),
        ],
    );
    producer
        .try_finish(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log_text()));
    let order = loop {
        let m = sse.next_message(T).await.expect("the order job's event");
        if m.data.contains("ord_node_traced") {
            break m;
        }
    };
    let (trace, job_span) = carried(&order.data);
    assert_eq!(trace, JOB_TRACE, "the job's trace: {}", order.data);

    // Each hop's log line names its trace.
    let deadline = Instant::now() + T;
    loop {
        let (g, w) = (gw.log_text(), worker.log_text());
        let done = logged(&g, "published", HTTP_TRACE)
            && logged(&g, "fanned out", HTTP_TRACE)
            && logged(&w, "job done", JOB_TRACE)
            && logged(&g, "fanned out", JOB_TRACE);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hop log lines missing:\n--- gateway\n{g}\n--- worker\n{w}"
        );
        // Polling two processes' logs: no event tells when a line is written.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // And the receiver has the spans, parent to child.
    let deadline = Instant::now() + T;
    let find = |all: &[Span], service: &str, name: &str, trace: &str, parent: &str| {
        all.iter()
            .find(|s| s.service == service && s.name == name && s.trace == trace && s.parent == parent)
            .cloned()
    };
    loop {
        let all = spans(&collector);
        let publish = find(&all, "sse-gateway", "publish", HTTP_TRACE, HTTP_PARENT);
        // The producer's four jobs all continue its trace: the order's is the event's parent.
        let job = all
            .iter()
            .find(|s| {
                s.service == "worker-emitter"
                    && s.name == "job"
                    && s.trace == JOB_TRACE
                    && s.parent == JOB_PARENT
                    && s.id == job_span
            })
            .cloned();
        let fanned_http = find(&all, "sse-gateway", "fan-out", HTTP_TRACE, &publish_span);
        let fanned_job = find(&all, "sse-gateway", "fan-out", JOB_TRACE, &job_span);
        if let (Some(p), Some(j), Some(_), Some(_)) = (&publish, &job, &fanned_http, &fanned_job) {
            assert_eq!(p.id, publish_span, "the event's parent is the publish span");
            assert_eq!(j.id, job_span, "the event's parent is the job span");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing: publish {publish:?}, job {job:?}, fan-outs {fanned_http:?} {fanned_job:?}; got {all:#?}"
        );
        // Polling the receiver: the exporter's batches arrive on its own schedule.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
