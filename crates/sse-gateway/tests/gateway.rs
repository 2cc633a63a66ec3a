//! The gateway over real HTTP on 127.0.0.1 with the in-process bus: stream format, filters,
//! resume, resync, errors, publish, drain, slow consumers.

use std::time::Duration;

mod common;

use common::{envelope, next_env, Gateway, T};
use event_bus::{Action, Broker, Channel, Cursor, Envelope, EventType, NewEvent, Payload};
use serde_json::{json, Value};
use testkit::sse::Item;

#[tokio::test]
async fn stream_opens_at_once_and_frames_events_per_contract() {
    let gw = Gateway::start(|_| {}).await;
    let mut s = gw.stream("", None).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.headers["cache-control"], "no-cache, no-transform");
    assert_eq!(s.headers["x-accel-buffering"], "no");
    assert!(s.headers.get("content-encoding").is_none());
    // retry: (between half and all of retry_ms, 500) and a comment arrive before any event
    // exists.
    match s.next_item(T).await {
        Some(Item::Retry(ms)) => assert!((250..500).contains(&ms), "retry: {ms}"),
        other => panic!("expected retry: first, got {other:?}"),
    }
    assert!(matches!(s.next_item(T).await, Some(Item::Comment(_))));
    let id = gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "ord_1").await;
    let (m, e) = next_env(&mut s).await;
    assert_eq!((e.id, e.payload.id.as_str(), e.channel), (id, "ord_1", Channel::ORDERS));
    assert_eq!(
        m.event, None,
        "no event: line unless named=true (onmessage gets everything)"
    );
    let cursor: Cursor = m.id.unwrap().parse().unwrap();
    assert_eq!(cursor.get(&Channel::ORDERS), Some(id));
    assert_eq!(
        cursor.iter().count(),
        4,
        "the cursor covers every channel of the stream"
    );
}

#[tokio::test]
async fn named_streams_carry_the_type_as_event() {
    let gw = Gateway::start(|_| {}).await;
    let mut s = gw.open("?named=true&channels=pricing", None).await;
    gw.publish(&Channel::PRICING, EventType::PRICE_CHANGE, "lst_1").await;
    let (m, e) = next_env(&mut s).await;
    assert_eq!(m.event.as_deref(), Some("PRICE_CHANGE"));
    assert_eq!(e.event_type, EventType::PRICE_CHANGE);
}

#[tokio::test]
async fn filters_by_channel_type_and_entity() {
    let gw = Gateway::start(|c| {
        c.bus.channels.push(event_bus::ChannelSpec {
            name: Channel::new("runs").unwrap(),
            types: vec![],
            partitions: 1,
        })
    })
    .await;
    let runs = Channel::new("runs").unwrap();
    let mut by_channel = gw.open("?channels=orders", None).await;
    let mut by_type = gw.open("?channels=runs&types=status_changed", None).await;
    let mut by_ids = gw.open("?channels=runs,orders&ids=run_7,ord_9", None).await;
    gw.publish(&Channel::PRICING, EventType::PRICE_CHANGE, "lst_1").await;
    gw.publish(&runs, EventType::new("item_updated").unwrap(), "run_7")
        .await;
    gw.publish(&runs, EventType::new("status_changed").unwrap(), "run_8")
        .await;
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "ord_1").await;
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "ord_9").await;
    let ids = |v: Vec<Envelope>| v.into_iter().map(|e| e.payload.id).collect::<Vec<_>>();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_env(&mut by_channel).await.1);
    }
    assert_eq!(ids(got), ["ord_1", "ord_9"]);
    assert_eq!(next_env(&mut by_type).await.1.payload.id, "run_8");
    let mut got = vec![next_env(&mut by_ids).await.1, next_env(&mut by_ids).await.1];
    got.sort_by(|a, b| a.payload.id.cmp(&b.payload.id));
    assert_eq!(ids(got), ["ord_9", "run_7"]);
    // Nothing else is pending on any of them: a sentinel for each arrives next.
    gw.publish(&runs, EventType::new("status_changed").unwrap(), "run_7")
        .await;
    assert_eq!(next_env(&mut by_type).await.1.payload.id, "run_7");
    assert_eq!(next_env(&mut by_ids).await.1.payload.id, "run_7");
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "sentinel")
        .await;
    assert_eq!(next_env(&mut by_channel).await.1.payload.id, "sentinel");
}

#[tokio::test]
async fn resumes_exactly_with_last_event_id_and_the_query_parameter() {
    let gw = Gateway::start(|_| {}).await;
    let mut s = gw.open("?channels=orders,pricing", None).await;
    let mut all = Vec::new();
    for i in 0..5 {
        let (c, t) = if i % 2 == 0 {
            (Channel::ORDERS, EventType::ORDER_RECEIVED)
        } else {
            (Channel::PRICING, EventType::PRICE_CHANGE)
        };
        all.push(gw.publish(&c, t, &format!("e{i}")).await);
    }
    // Order holds per channel, not across channels: remember which two arrived.
    let (_, first) = next_env(&mut s).await;
    let (m, second) = next_env(&mut s).await;
    let last = m.id.unwrap();
    drop(s);
    for i in 5..8 {
        all.push(
            gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, &format!("e{i}"))
                .await,
        );
    }
    let mut live_so_far: Vec<String> = Vec::new();
    for how in ["header", "query"] {
        let mut s = match how {
            "header" => gw.open("?channels=orders,pricing", Some(&last)).await,
            _ => {
                gw.open(&format!("?channels=orders,pricing&last_event_id={last}"), None)
                    .await
            }
        };
        let mut expected: Vec<String> = (0..8)
            .map(|i| format!("e{i}"))
            .filter(|e| *e != first.payload.id && *e != second.payload.id)
            .chain(live_so_far.iter().cloned())
            .collect();
        expected.sort();
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(next_env(&mut s).await.1.payload.id);
        }
        got.sort();
        assert_eq!(got, expected, "resume by {how}");
        let live = gw
            .publish(&Channel::PRICING, EventType::PRICE_CHANGE, &format!("live-{how}"))
            .await;
        assert_eq!(
            next_env(&mut s).await.1.id,
            live,
            "resume by {how}: the next event is the live one"
        );
        live_so_far.push(format!("live-{how}"));
    }
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains("realtime_reconnects_with_cursor_total{instance=\"test-gw\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_cursor_older_than_retention_starts_with_resync() {
    let gw = Gateway::start(|c| c.bus.memory_capacity = 10).await;
    let first = gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "old").await;
    for i in 0..50 {
        gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, &format!("{i}"))
            .await;
    }
    let mut old = Cursor::new();
    old.set(Channel::ORDERS, first);
    let mut s = gw.open("?channels=orders&named=true", Some(&old.to_string())).await;
    let m = s.next_message(T).await.unwrap();
    assert_eq!(m.event.as_deref(), Some("RESYNC"));
    let data: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(
        (data["type"].as_str(), data["channel"].as_str()),
        (Some("RESYNC"), Some("orders"))
    );
    let live = gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "after").await;
    assert_eq!(next_env(&mut s).await.1.id, live);
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_codes() {
    let gw = Gateway::start(|_| {}).await;
    for (query, last, code) in [
        ("?channels=orders,secrets", None, "unknown_channel"),
        ("?named=maybe", None, "bad_named"),
        ("", Some("not-a-cursor!"), "bad_cursor"),
        ("?last_event_id=1732330000123-0", None, "bad_cursor"),
    ] {
        let s = gw.stream(query, last).await;
        assert_eq!(s.status, 400, "{query} {last:?}");
        let r = reqwest::Client::new()
            .get(format!("{}/api/realtime/events{query}", gw.base))
            .header("last-event-id", last.unwrap_or(""))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], code, "{query}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.len() > 10), "{body}");
    }
}

#[tokio::test]
async fn publish_endpoint_accepts_one_or_many_and_explains_bad_bodies() {
    let gw = Gateway::start(|_| {}).await;
    let mut s = gw.open("?channels=orders", None).await;
    let (status, body) = gw
        .post(
            "/api/realtime/publish",
            r#"{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"ord_5","action":"created","data":{"marketplace":"ebay","total":3}},"idempotency_key":"hook-5"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(next_env(&mut s).await.1.id.to_string(), id);
    // The same idempotency key again: the same id, nothing new on the stream.
    let (_, again) = gw
        .post("/api/realtime/publish", r#"{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"ord_5","action":"created"},"idempotency_key":"hook-5"}"#)
        .await;
    assert_eq!(
        (again["id"].as_str(), again["duplicate"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    let (status, list) = gw
        .post(
            "/api/realtime/publish",
            r#"[{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"a","action":"created"}},
                {"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"b","action":"created"}}]"#,
        )
        .await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(2)));
    assert_eq!(next_env(&mut s).await.1.payload.id, "a");
    assert_eq!(next_env(&mut s).await.1.payload.id, "b");
    for (body, code, mentions) in [
        ("{not json", "bad_json", "JSON"),
        (
            r#"{"channel":"orders","payload":{"id":"x","action":"created"}}"#,
            "bad_event",
            "type",
        ),
        (
            r#"{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"x","action":"exploded"}}"#,
            "bad_event",
            "exploded",
        ),
        (
            r#"{"channel":"nowhere","type":"ORDER_RECEIVED","payload":{"id":"x","action":"created"}}"#,
            "unknown_channel",
            "nowhere",
        ),
        (
            r#"{"channel":"orders","type":"PRICE_CHANGE","payload":{"id":"x","action":"created"}}"#,
            "unknown_type",
            "PRICE_CHANGE",
        ),
        (
            r#"[{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"x","action":"created"}},{"channel":"orders"}]"#,
            "bad_event",
            "item 1",
        ),
        ("[]", "bad_batch", "1 to 1000"),
    ] {
        let (status, err) = gw.post("/api/realtime/publish", body).await;
        assert_eq!((status, err["code"].as_str()), (400, Some(code)), "{body}: {err}");
        assert!(err["message"].as_str().unwrap().contains(mentions), "{body}: {err}");
    }
    // An oversized body is refused with a JSON error, not read whole.
    let big = format!(
        "[{}]",
        vec![r#"{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"x","action":"created"}}"#; 20_000]
            .join(",")
    );
    let (status, err) = gw.post("/api/realtime/publish", &big).await;
    assert_eq!((status, err["code"].as_str()), (413, Some("body_too_large")), "{err}");
    // None of the rejected bodies published anything: the next event is this sentinel.
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "sentinel")
        .await;
    assert_eq!(next_env(&mut s).await.1.payload.id, "sentinel");
    let (status, t) = gw.post("/api/realtime/test", r#"{"channel":"orders"}"#).await;
    assert_eq!(status, 200, "{t}");
    let e = next_env(&mut s).await.1;
    assert_eq!(
        (e.payload.data.unwrap()["test"].as_bool(), e.id.to_string()),
        (Some(true), t["id"].as_str().unwrap().to_owned())
    );
}

#[tokio::test]
async fn disabled_realtime_answers_503_and_publishing_is_a_no_op() {
    let gw = Gateway::start(|c| c.realtime_enabled = false).await;
    let r = reqwest::get(format!("{}/api/realtime/events", gw.base)).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "realtime_disabled");
    let (status, body) = gw
        .post(
            "/api/realtime/publish",
            r#"{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"x","action":"created"}}"#,
        )
        .await;
    assert_eq!((status, body["disabled"].as_bool()), (202, Some(true)));
    assert_eq!(gw.bus.stats().snapshot().published, 0);
}

#[tokio::test]
async fn status_health_metrics_and_connections() {
    let gw = Gateway::start(|_| {}).await;
    let mut s = gw.open("?channels=orders", None).await;
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "x").await;
    next_env(&mut s).await;
    let (code, status) = gw.get("/api/realtime/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(code, 200);
    assert_eq!(status["connected"], true);
    assert_eq!(status["redis"], "memory");
    assert_eq!(status["instance"], "test-gw");
    assert_eq!(status["connections"], 1);
    assert_eq!(gw.get("/healthz").await.0, 200);
    assert_eq!(gw.get("/readyz").await.0, 200);
    let (_, conns) = gw.get("/api/realtime/connections").await;
    let conns: Value = serde_json::from_str(&conns).unwrap();
    assert_eq!(conns["connections"][0]["channels"], json!(["orders"]));
    assert_eq!(conns["connections"][0]["events_sent"], 1);
    // An edge thread adds its deliveries (counts, then latencies) to the metrics within
    // 100 ms (`stream/tally.rs`): awaited, bounded; the counters are in once the latency is.
    let latency = "realtime_delivery_latency_seconds_count{instance=\"test-gw\"} 1";
    assert!(
        testkit::wait_until(T, || async { gw.get("/metrics").await.1.contains(latency) }).await,
        "the delivery's latency never reached the histogram"
    );
    let (_, m) = gw.get("/metrics").await;
    for needle in [
        "realtime_connections_active{transport=\"sse\",instance=\"test-gw\"} 1",
        "realtime_connections_active{transport=\"ws\",instance=\"test-gw\"} 0",
        "realtime_events_delivered_total{transport=\"sse\",type=\"ORDER_RECEIVED\",instance=\"test-gw\"} 1",
        "realtime_upstream_up{instance=\"test-gw\"} 1",
        "realtime_delivery_latency_seconds_count{instance=\"test-gw\"} 1",
        "realtime_slow_consumer_disconnects_total",
        "realtime_malformed_events_total",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    drop(s);
    assert!(
        testkit::wait_until(T, || async {
            gw.get("/api/realtime/status").await.1.contains("\"connections\":0")
        })
        .await,
        "a closed stream stays registered"
    );
}

#[tokio::test]
async fn heartbeats_come_from_one_shared_tick() {
    let gw = Gateway::start(|c| c.heartbeat_interval_ms = 100).await;
    let mut a = gw.open("", None).await;
    let mut b = gw.open("", None).await;
    for s in [&mut a, &mut b] {
        assert_eq!(s.next_item(T).await, Some(Item::Comment("heartbeat".into())));
    }
}

/// The drain: new connections are refused at once; the streams are served on and leave one
/// by one over `drain_retry_spread_ms`, each told to come back at once; then the server exits.
#[tokio::test]
async fn drain_spreads_the_ends_and_each_stream_reconnects_at_once() {
    let mut gw = Gateway::start(|c| {
        c.drain_grace_ms = 5_000;
        c.drain_retry_spread_ms = 2_000;
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(gw.open("", None).await);
    }
    let started = std::time::Instant::now();
    gw.shutdown.cancel();
    // New connections are refused (not left in the backlog) while the streams are still served.
    let addr = gw.base.trim_start_matches("http://").to_owned();
    assert!(
        testkit::wait_until(T, || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_err() }
        })
        .await,
        "the draining gateway still accepts connections"
    );
    // The streams still open are served: an event published now reaches them.
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "during-drain")
        .await;
    let mut ends = Vec::new();
    let mut served = 0;
    for s in &mut streams {
        let retry = loop {
            match s.next_item(T).await {
                Some(Item::Retry(ms)) => break ms,
                Some(Item::Comment(c)) if c == "heartbeat" => continue,
                Some(Item::Message(m)) if envelope(&m).payload.id == "during-drain" => served += 1,
                other => panic!("expected a last retry:, got {other:?}"),
            }
        };
        assert!(retry < 50, "a drained stream reconnects at once, not after {retry} ms");
        assert!(matches!(s.next_item(T).await, Some(Item::Comment(c)) if c.contains("draining")));
        assert_eq!(s.next_item(T).await, None, "the stream must end");
        ends.push(started.elapsed());
    }
    // Eight ends at random points of 2 s: all in the first 100 ms has a chance of 1e-8.
    assert!(
        ends.iter().any(|e| *e >= Duration::from_millis(100)),
        "every stream ended at once: {ends:?}"
    );
    assert!(ends.iter().all(|e| *e < Duration::from_millis(4_000)), "{ends:?}");
    assert!(
        served > 0,
        "no stream got the event published during the drain: {ends:?}"
    );
    let server = gw.server.take().unwrap();
    tokio::time::timeout(T, server)
        .await
        .expect("server did not exit")
        .unwrap()
        .unwrap();
}

/// A client that stops reading for a while costs a reader that keeps up nothing, and is not cut
/// when its queue fills: the hub stops queueing for it, and once it reads again its stream reads
/// what it missed from the store, in place, then follows the hub again. It gets every event
/// once, in order, on the connection it had (issue 34: slow means the socket, not the backlog).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_catches_up_in_place_without_loss_or_reconnect() {
    const N: usize = 20_000;
    let gw = Gateway::start(|c| c.connection_queue = 64).await;
    let mut healthy = gw.open("?channels=orders", None).await;
    let mut stalled = gw.open("?channels=orders", None).await;
    let big = "x".repeat(1_000);
    // The healthy reader reports its progress; the publisher never runs more than 32 events
    // ahead of it (half its queue), so it keeps up by construction, however slow the machine.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        while got.len() < N {
            got.push(next_env(&mut healthy).await.1.payload.id);
            progress_tx.send_replace(got.len());
        }
        got
    });
    for i in 0..N {
        let e = NewEvent::new(
            EventType::ORDER_RECEIVED,
            Payload::new(format!("{i}"), Action::Created).with_data(json!({"pad": big})),
        );
        gw.bus.publish(&Channel::ORDERS, e).await.unwrap();
        tokio::time::timeout(T, progress.wait_for(|n| n + 32 >= i))
            .await
            .expect("healthy reader stopped")
            .unwrap();
    }
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(
        reader.await.unwrap(),
        expected,
        "the healthy reader lost or reordered events"
    );
    // The stalled one now reads: everything, once, in order, on the same connection.
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        match stalled.next_item(T).await {
            Some(Item::Message(m)) => got.push(envelope(&m).payload.id),
            Some(Item::Comment(c)) => assert!(!c.contains("too slow"), "it was cut: {c}"),
            Some(_) => {}
            None => panic!("the stream ended after {} events", got.len()),
        }
    }
    assert_eq!(got, expected, "events lost or repeated by the catch-up");
    let (_, m) = gw.get("/metrics").await;
    assert!(
        m.contains("realtime_slow_consumer_disconnects_total{instance=\"test-gw\"} 0"),
        "{m}"
    );
    let behind = m
        .lines()
        .find_map(|l| l.strip_prefix("realtime_streams_behind_total{instance=\"test-gw\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("the counter");
    assert!(behind >= 1, "its queue never filled: the test proves nothing");
}

/// A 10k burst with the default window reaches a client as a bounded number of messages whose
/// counts add up to 10k; the cursor after the last covers every event, so a resume repeats
/// nothing.
#[tokio::test]
async fn a_burst_is_grouped_into_few_messages_whose_counts_add_up() {
    const N: usize = 10_000;
    let gw = Gateway::start(|c| c.debounce_window_ms = 500).await;
    let mut s = gw.open("?channels=pricing&named=true", None).await;
    let batch: Vec<_> = (0..N)
        .map(|i| {
            (
                Channel::PRICING,
                NewEvent::new(EventType::PRICE_CHANGE, Payload::new(format!("{i}"), Action::Updated)),
            )
        })
        .collect();
    let last = gw.bus.publish_batch(batch).await.unwrap().last().unwrap().id;
    let (mut messages, mut total, mut groups) = (0, 0, 0);
    let mut seqs = Vec::with_capacity(N);
    let mut last_cursor = String::new();
    while total < N {
        let m = s.next_message(T).await.expect("stream ended");
        assert_eq!(m.event.as_deref(), Some("PRICE_CHANGE"), "a group keeps the type");
        let v: Value = serde_json::from_str(&m.data).unwrap();
        messages += 1;
        match v.get("count") {
            Some(count) => {
                groups += 1;
                let payloads = v["payloads"].as_array().unwrap();
                assert_eq!(count.as_u64().unwrap() as usize, payloads.len());
                assert_eq!(v["type"], "PRICE_CHANGE");
                seqs.extend(
                    payloads
                        .iter()
                        .map(|p| p["id"].as_str().unwrap().parse::<usize>().unwrap()),
                );
                total += payloads.len();
            }
            None => {
                seqs.push(v["payload"]["id"].as_str().unwrap().parse().unwrap());
                total += 1;
            }
        }
        last_cursor = m.id.unwrap();
    }
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "every event once, in order");
    assert!(messages <= 40, "{messages} messages for {N} events");
    assert!(groups >= 1);
    let cursor: Cursor = last_cursor.parse().unwrap();
    assert_eq!(cursor.get(&Channel::PRICING), Some(last));
    drop(s);
    let mut resumed = gw.open("?channels=pricing", Some(&last_cursor)).await;
    let after = gw.publish(&Channel::PRICING, EventType::PRICE_CHANGE, "after").await;
    assert_eq!(
        next_env(&mut resumed).await.1.id,
        after,
        "the resume repeated grouped events"
    );
    let (_, m) = gw.get("/metrics").await;
    assert!(
        m.contains("realtime_groups_coalesced_total{instance=\"test-gw\"}"),
        "{m}"
    );
}

/// With a 10 s window, an isolated event still arrives at once (well inside 5 s); only what
/// follows it within the window is held.
#[tokio::test]
async fn an_isolated_event_is_not_held_back_by_the_window() {
    let gw = Gateway::start(|c| c.debounce_window_ms = 10_000).await;
    let mut s = gw.open("?channels=orders", None).await;
    let id = gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "alone").await;
    let m = s.next_message(Duration::from_secs(5)).await.expect("held back");
    assert_eq!(envelope(&m).id, id);
}

/// Another type on the same channel sends the held group first: order per channel holds.
#[tokio::test]
async fn grouping_keeps_order_within_a_channel() {
    let gw = Gateway::start(|c| {
        c.debounce_window_ms = 10_000;
        c.bus.channels.push(event_bus::ChannelSpec {
            name: Channel::new("tasks").unwrap(),
            types: vec![],
            partitions: 1,
        });
    })
    .await;
    let tasks = Channel::new("tasks").unwrap();
    let mut s = gw.open("?channels=tasks", None).await;
    for i in 0..3 {
        gw.publish(&tasks, EventType::new("task_created").unwrap(), &format!("c{i}"))
            .await;
    }
    gw.publish(&tasks, EventType::new("session_update").unwrap(), "s0")
        .await;
    let mut got = Vec::new();
    while got.len() < 4 {
        let v: Value = serde_json::from_str(&s.next_message(Duration::from_secs(5)).await.unwrap().data).unwrap();
        match v.get("payloads") {
            Some(p) => got.extend(
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_str().unwrap().to_owned()),
            ),
            None => got.push(v["payload"]["id"].as_str().unwrap().to_owned()),
        }
    }
    assert_eq!(got, ["c0", "c1", "c2", "s0"]);
}

/// What the gateway sends matches proto-schemas/: events, grouped messages, RESYNC, errors,
/// status, connections and publish answers.
#[tokio::test]
async fn bodies_match_the_schemas() {
    let schemas = testkit::schemas::Schemas::load();
    let gw = Gateway::start(|c| {
        c.debounce_window_ms = 10_000;
        c.bus.memory_capacity = 10;
    })
    .await;
    let mut s = gw.open("?channels=pricing", None).await;
    // Fewer than the ring holds: the RESYNC below comes from the old cursor, not from trimming.
    let batch: Vec<_> = (0..5)
        .map(|i| {
            (
                Channel::PRICING,
                NewEvent::new(
                    EventType::PRICE_CHANGE,
                    Payload::new(format!("{i}"), Action::Updated).with_data(json!({"newPrice": 1.5})),
                ),
            )
        })
        .collect();
    gw.bus.publish_batch(batch).await.unwrap();
    let single: Value = serde_json::from_str(&s.next_message(T).await.unwrap().data).unwrap();
    schemas.assert_valid("envelope.schema.json", &single);
    schemas.assert_valid("price-change.schema.json", &single);
    drop(s);
    // A cursor from before the first stored event: RESYNC, then the replay as a held group.
    let mut old = Cursor::new();
    old.set(Channel::PRICING, event_bus::EventId::new(1, 0));
    let mut s = gw.open("?channels=pricing", Some(&old.to_string())).await;
    let resync: Value = serde_json::from_str(&s.next_message(T).await.unwrap().data).unwrap();
    schemas.assert_valid("sse-resync.schema.json", &resync);
    let mut s2 = gw
        .open(
            "?channels=pricing",
            Some(
                &{
                    let mut c = Cursor::new();
                    c.set(
                        Channel::PRICING,
                        gw.bus
                            .head(&[Channel::PRICING])
                            .await
                            .unwrap()
                            .get(&Channel::PRICING)
                            .unwrap(),
                    );
                    c
                }
                .to_string(),
            ),
        )
        .await;
    for i in 0..3 {
        gw.publish(&Channel::PRICING, EventType::PRICE_CHANGE, &format!("g{i}"))
            .await;
    }
    let first: Value = serde_json::from_str(&s2.next_message(T).await.unwrap().data).unwrap();
    schemas.assert_valid("envelope.schema.json", &first);
    drop(s2);
    // Closing the gateway flushes held groups: the other stream gets the rest as a group.
    let mut saw_group = false;
    gw.shutdown.cancel();
    while let Some(m) = s.next_message(T).await {
        let v: Value = serde_json::from_str(&m.data).unwrap();
        if v.get("count").is_some() {
            schemas.assert_valid("sse-group.schema.json", &v);
            saw_group = true;
        }
    }
    assert!(saw_group, "no grouped message was flushed at close");

    let gw = Gateway::start(|_| {}).await;
    let _open = gw.open("?channels=orders", None).await;
    let (_, status) = gw.get("/api/realtime/status").await;
    schemas.assert_valid("status.schema.json", &serde_json::from_str(&status).unwrap());
    let (_, conns) = gw.get("/api/realtime/connections").await;
    schemas.assert_valid("connections.schema.json", &serde_json::from_str(&conns).unwrap());
    let (_, stats) = gw.get("/api/realtime/stats").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    schemas.assert_valid("stats.schema.json", &stats);
    assert_eq!(
        (
            stats["total"]["instances"].as_u64(),
            stats["total"]["connections"].as_u64()
        ),
        (Some(1), Some(1)),
        "{stats}"
    );
    let request = json!([{"channel": "orders", "type": "ORDER_RECEIVED", "payload": {"id": "o", "action": "created"}, "idempotency_key": "k1"}]);
    schemas.assert_valid("publish-request.schema.json", &request);
    let (_, answer) = gw.post("/api/realtime/publish", &request.to_string()).await;
    schemas.assert_valid("publish-response.schema.json", &answer);
    let (_, err) = gw.post("/api/realtime/publish", "{").await;
    schemas.assert_valid("error.schema.json", &err);
    schemas.assert_invalid("publish-request.schema.json", &json!({"channel": "orders"}));
}

/// Per-client and per-process limits: 429 and 503 with Retry-After and a JSON body.
#[tokio::test]
async fn connection_limits_answer_429_and_503() {
    let gw = Gateway::start(|c| {
        c.max_connections_per_client = 2;
        c.max_connections = 3;
        c.trust_forwarded_for = true;
    })
    .await;
    let open = |xff: Option<&'static str>| {
        let url = format!("{}/api/realtime/events", gw.base);
        async move {
            let mut req = reqwest::Client::new().get(url);
            if let Some(ip) = xff {
                req = req.header("x-forwarded-for", ip);
            }
            req.send().await.unwrap()
        }
    };
    let a = open(None).await;
    let b = open(None).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let third = open(None).await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "5");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["code"], "too_many_connections_for_client");
    // Another client behind the trusted proxy is someone else.
    let c = open(Some("203.0.113.7, 10.0.0.1")).await;
    assert_eq!(c.status(), 200);
    let full = open(Some("198.51.100.2")).await;
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(full.json::<Value>().await.unwrap()["code"], "too_many_connections");
    // Closing one frees its slot.
    drop(a);
    assert!(
        testkit::wait_until(T, || async { open(None).await.status() == 200 }).await,
        "a closed stream's slot was not freed"
    );
}

/// A client that stops reading a state channel (pricing) is not cut: what does not fit its
/// queue is kept latest-wins per listing, so when it reads again it ends with every listing's
/// latest price, in order, and stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_client_of_a_state_channel_gets_the_latest_per_entity() {
    const N: usize = 20_000;
    const LISTINGS: usize = 10;
    let gw = Gateway::start(|c| c.connection_queue = 64).await;
    let mut healthy = gw.open("?channels=pricing", None).await;
    let mut stalled = gw.open("?channels=pricing", None).await;
    let big = "x".repeat(1_000);
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        for n in 1..=N {
            next_env(&mut healthy).await;
            progress_tx.send_replace(n);
        }
        healthy
    });
    let mut last_price = [0usize; LISTINGS];
    for i in 0..N {
        let listing = i % LISTINGS;
        last_price[listing] = i;
        let data = json!({"newPrice": i, "pad": big});
        let e = NewEvent::new(
            EventType::PRICE_CHANGE,
            Payload::new(format!("lst_{listing}"), Action::Updated).with_data(data),
        );
        gw.bus.publish(&Channel::PRICING, e).await.unwrap();
        tokio::time::timeout(T, progress.wait_for(|n| n + 32 >= i))
            .await
            .expect("healthy reader stopped")
            .unwrap();
    }
    let _healthy = reader.await.unwrap();
    let (_, m) = gw.get("/metrics").await;
    assert!(
        m.contains("realtime_slow_consumer_disconnects_total{instance=\"test-gw\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("realtime_events_collapsed_total{instance=\"test-gw\"} 0"),
        "nothing was collapsed: {m}"
    );
    // The stalled client reads now: ids only go up, and it ends with every latest price.
    let mut latest = [None; LISTINGS];
    let mut previous = event_bus::EventId::ZERO;
    let mut received = 0;
    while latest.iter().zip(&last_price).any(|(got, want)| *got != Some(*want)) {
        let (_, e) = next_env(&mut stalled).await;
        assert!(e.id > previous, "order broken: {} after {previous}", e.id);
        previous = e.id;
        received += 1;
        let listing: usize = e.payload.id.trim_start_matches("lst_").parse().unwrap();
        latest[listing] = e.payload.data.as_ref().unwrap()["newPrice"]
            .as_u64()
            .map(|p| p as usize);
    }
    assert!(received < N, "nothing was collapsed for the stalled client");
    let sentinel = gw.publish(&Channel::PRICING, EventType::PRICE_CHANGE, "lst_0").await;
    assert_eq!(
        next_env(&mut stalled).await.1.id,
        sentinel,
        "the lagging client was disconnected or got extra events"
    );
}

/// The dashboard and the client module are served from the binary, typed, revalidated by ETag.
#[tokio::test]
async fn dashboard_and_client_module_are_served() {
    let gw = Gateway::start(|_| {}).await;
    let client = reqwest::Client::new();
    for (path, ty, needle) in [
        ("/", "text/html", "<title>rakuda realtime"),
        ("/dashboard.css", "text/css", ".toasts"),
        ("/dashboard.js", "text/javascript", "from '/realtime-client.js'"),
        ("/realtime-client.js", "text/javascript", "export class RealtimeClient"),
    ] {
        let r = client.get(format!("{}{path}", gw.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with(ty), "{path}: {h:?}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let etag = h["etag"].to_str().unwrap().to_owned();
        assert!(r.text().await.unwrap().contains(needle), "{path}");
        let again = client
            .get(format!("{}{path}", gw.base))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
}
