//! A channel spread over partitions (`bus.channels[].partitions`), as clients see it: one
//! channel. A stream gets every event of every partition, each entity's in order, named by the
//! channel; a resume from its cursor (a position per partition) replays exactly what it
//! missed; a cursor written when the channel had another layout gets a RESYNC of the channel,
//! never a silent skip.

mod common;

use std::collections::BTreeSet;

use common::{next_env, Gateway, T};
use event_bus::{Channel, ChannelSpec, Cursor, EventId, EventType};
use serde_json::json;

fn hot() -> Channel {
    Channel::new("hot").unwrap()
}

async fn publish(gw: &Gateway, entity: &str, n: usize) {
    let body = json!({"channel": "hot", "type": "tick",
                      "payload": {"id": entity, "action": "updated", "data": {"n": n}}});
    let (status, answer) = gw.post("/api/realtime/publish", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
}

/// Reads `n` events: (entity, n) each, checking each entity's are in order and named `hot`;
/// and the cursor after the last.
async fn take(s: &mut testkit::sse::SseStream, n: usize) -> (Vec<(String, u64)>, String) {
    let (mut out, mut last) = (Vec::new(), String::new());
    while out.len() < n {
        let (m, e) = next_env(s).await;
        let json: serde_json::Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(json["channel"], "hot", "clients see the channel: {json}");
        let k = e.payload.data.as_ref().unwrap()["n"].as_u64().unwrap();
        if let Some((_, before)) = out.iter().rev().find(|(id, _)| *id == e.payload.id) {
            assert!(k > *before, "{}'s events out of order", e.payload.id);
        }
        out.push((e.payload.id.clone(), k));
        last = m.id.expect("a cursor");
    }
    (out, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_channel_is_one_channel_to_clients() {
    let gw = Gateway::start(|c| {
        c.bus.channels.push(ChannelSpec {
            name: hot(),
            types: vec![EventType::new("tick").unwrap()],
            partitions: 4,
        })
    })
    .await;
    let mut s = gw.open("?channels=hot", None).await;
    for i in 0..40 {
        publish(&gw, &format!("e{}", i % 10), i / 10).await;
    }
    let (first, cursor) = take(&mut s, 20).await;
    let (rest, _) = take(&mut s, 20).await;
    drop(s);
    let all: BTreeSet<_> = first.iter().chain(&rest).cloned().collect();
    assert_eq!(all.len(), 40, "every event once");
    // Its cursor holds a position per partition.
    let parsed: Cursor = cursor.parse().unwrap();
    assert!(parsed.iter().all(|(c, _)| c.logical() == "hot" && c.is_partition()));

    // Resumed from the 20th: exactly the other 20, from every partition, then live.
    let mut r = gw.open("?channels=hot", Some(&cursor)).await;
    let (again, _) = take(&mut r, 20).await;
    assert_eq!(
        again.iter().cloned().collect::<BTreeSet<_>>(),
        rest.iter().cloned().collect::<BTreeSet<_>>()
    );
    publish(&gw, "sentinel", 0).await;
    assert_eq!(next_env(&mut r).await.1.payload.id, "sentinel", "nothing more");

    // A cursor of the channel as one stream (before it had partitions): a RESYNC of it.
    let mut old = Cursor::new();
    old.set(hot(), EventId::new(1, 0));
    let mut o = gw.open("?channels=hot", Some(&old.to_string())).await;
    let m = o.next_message(T).await.expect("a message");
    let v: serde_json::Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["channel"].as_str()),
        (Some("RESYNC"), Some("hot")),
        "{v}"
    );
    publish(&gw, "e5", 99).await;
    let (m, e) = next_env(&mut o).await;
    assert_eq!(e.payload.id, "e5");
    // The cursor after it is of the new layout: a resume from it is no RESYNC.
    let mut n = gw.open("?channels=hot", m.id.as_deref()).await;
    publish(&gw, "e6", 100).await;
    assert_eq!(next_env(&mut n).await.1.payload.id, "e6");
}
