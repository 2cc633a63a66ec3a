//! Subscriptions on demand (`subscriptions_on_demand`, the default): a real gateway process on
//! a real redis-server follows a channel upstream (`SSUBSCRIBE` of its shard channel) only
//! from its first stream, and stops `follow_grace_ms` after its last. A stream asking for a
//! channel the gateway does not follow yet is served exactly: a replay from its cursor, then
//! live, while events keep arriving, with no gap and no duplicate across the subscribe.

use std::{path::Path, time::Duration};

use event_bus::{Action, Broker, BusConfig, Channel, Cursor, EventType, NewEvent, Payload, RedisBus};
use testkit::{process::Service, sse::SseStream, RedisServer};

const T: Duration = Duration::from_secs(20);

fn shard_subscribers(redis: &RedisServer, channel: &str) -> u64 {
    let out = redis
        .cli(&["PUBSUB", "SHARDNUMSUB", &format!("rakuda:realtime:live:{{{channel}}}")])
        .expect("PUBSUB");
    out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

fn order(i: usize) -> NewEvent {
    NewEvent::new(
        EventType::ORDER_RECEIVED,
        Payload::new(format!("o{i}"), Action::Created),
    )
}

/// Reads `n` events off a stream: their payload ids, and the last cursor.
async fn take(s: &mut SseStream, n: usize) -> (Vec<String>, String) {
    let (mut ids, mut last) = (Vec::new(), String::new());
    while ids.len() < n {
        let m = s
            .next_message(T)
            .await
            .unwrap_or_else(|| panic!("only {} of {n}: {ids:?}", ids.len()));
        let v: serde_json::Value = serde_json::from_str(&m.data).expect("JSON");
        ids.push(v["payload"]["id"].as_str().expect("an event").to_owned());
        last = m.id.expect("an id");
    }
    (ids, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_follows_a_channel_only_while_its_streams_need_it() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let env = testkit::process::env(&[
        ("REDIS_URL", &url),
        ("AUTH_MODE", "none"),
        ("SSE_DEBOUNCE_WINDOW", "0"),
        ("RAKUDA__FOLLOW_GRACE_MS", "300"),
        ("RUST_LOG", "warn"),
    ]);
    let gw = Service::start(Path::new(env!("CARGO_BIN_EXE_sse-gateway")), &env).unwrap();
    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(url),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("{}/api/realtime/events?channels=orders", gw.base());
    assert_eq!(shard_subscribers(&redis, "orders"), 0, "followed before any stream");

    // Stored before any stream; the client resumes from o1's position.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(bus.publish(&Channel::ORDERS, order(i)).await.unwrap().id);
    }
    let mut from = Cursor::new();
    from.set(Channel::ORDERS, ids[1]);
    // Events go on arriving while the stream opens: the subscribe falls among them.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 5..205 {
                bus.publish(&Channel::ORDERS, order(i)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut s = SseStream::connect(&url, Some(&from.to_string())).await.unwrap();
    assert_eq!(s.status, 200);
    let (got, last) = take(&mut s, 203).await;
    let expected: Vec<String> = (2..205).map(|i| format!("o{i}")).collect();
    assert_eq!(got, expected, "replay then live: each once, in order");
    publisher.await.unwrap();
    assert_eq!(
        shard_subscribers(&redis, "orders"),
        1,
        "followed while a stream needs it"
    );
    assert_eq!(shard_subscribers(&redis, "pricing"), 0, "no stream asked for pricing");

    // A second stream of the channel, from the head: the follow is shared.
    let mut second = SseStream::connect(&url, None).await.unwrap();
    assert_eq!(second.status, 200);
    bus.publish(&Channel::ORDERS, order(205)).await.unwrap();
    assert_eq!(take(&mut second, 1).await.0, ["o205"]);
    assert_eq!(take(&mut s, 1).await.0, ["o205"]);
    assert_eq!(shard_subscribers(&redis, "orders"), 1);

    // Every stream gone: no longer followed once the grace is over.
    drop((s, second));
    testkit::until("unsubscribed after the grace", T, || {
        shard_subscribers(&redis, "orders") == 0
    })
    .await;
    let metrics = testkit::process::get_text(&format!("{}/metrics", gw.base())).await;
    let followed = metrics
        .lines()
        .find(|l| l.starts_with("realtime_upstream_channels_followed"))
        .expect("the gauge");
    assert!(followed.ends_with(" 0"), "{followed}");

    // What was published meanwhile reaches a stream resuming from where the first one was.
    for i in 206..210 {
        bus.publish(&Channel::ORDERS, order(i)).await.unwrap();
    }
    let last = last.parse::<Cursor>().unwrap();
    let mut back = SseStream::connect(&url, Some(&last.to_string())).await.unwrap();
    let (got, _) = take(&mut back, 5).await;
    assert_eq!(got, ["o205", "o206", "o207", "o208", "o209"]);
    assert_eq!(shard_subscribers(&redis, "orders"), 1);
}
