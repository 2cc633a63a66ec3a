//! Acknowledgements (`docs/reference.md`, "Acknowledgements") on a real redis-server and two
//! real gateway processes in `AUTH_MODE=jwt`: an acknowledgement on one gateway reaches the
//! streams of the other as an `ACK` event, is recorded once per (event, user, kind), is listed
//! by `GET /api/events/{id}/acks`, and a read notification counts as acknowledged. Bad requests
//! get a 4xx with a JSON body and record nothing.

use std::{collections::HashMap, path::Path, time::Duration};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::{process::Service, schemas::Schemas, sse::SseStream, RedisServer};

const SECRET: &str = "acknowledgements-test-secret-32-chars";
const T: Duration = Duration::from_secs(10);

fn token(sub: &str, role: Option<&str>, channels: Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims = json!({"sub": sub, "exp": exp, "channels": channels});
    if let Some(r) = role {
        claims["role"] = json!(r);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    tok: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(tok);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The next message of `s` that is not a heartbeat comment, as JSON.
async fn next_json(s: &mut SseStream) -> Value {
    let m = s.next_message(T).await.expect("stream open");
    serde_json::from_str(&m.data).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledgement_reaches_every_dashboard_once_and_is_listed() {
    let redis = RedisServer::start().unwrap();
    let env: HashMap<String, String> = [
        ("REDIS_URL", redis.url().as_str()),
        ("AUTH_MODE", "jwt"),
        ("JWT_HS256_SECRET", SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_sse-gateway"));
    let (gw1, gw2) = (Service::start(bin, &env).unwrap(), Service::start(bin, &env).unwrap());
    let http = reqwest::Client::new();
    let schemas = Schemas::load();
    let publisher = token("svc", Some("publisher"), json!("*"));
    let alice = token("alice", Some("operator"), json!(["inventory"]));
    let bob = token("bob", None, json!(["inventory"]));

    // Alice on gateway 1, bob on gateway 2, both following inventory.
    let stream = |gw: &Service, tok: &str| {
        format!(
            "{}/api/realtime/events?channels=inventory&notifications=false&access_token={tok}",
            gw.base()
        )
    };
    let mut a = SseStream::connect(&stream(&gw1, &alice), None).await.unwrap();
    let mut b = SseStream::connect(&stream(&gw2, &bob), None).await.unwrap();
    assert_eq!((a.status, b.status), (200, 200));

    let publish = |id: &str| {
        json!({"channel": "inventory", "type": "INVENTORY_CHANGE",
               "payload": {"id": id, "action": "updated", "data": {"isAvailable": false}}})
    };
    let (status, v) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/api/realtime/publish", gw1.base()),
        &publisher,
        Some(publish("prod_12")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let event_id = v["id"].as_str().expect("the event id").to_owned();
    for s in [&mut a, &mut b] {
        let e = next_json(s).await;
        assert_eq!(
            (e["id"].as_str(), e["type"].as_str()),
            (Some(event_id.as_str()), Some("INVENTORY_CHANGE"))
        );
    }
    let acks_url = |gw: &Service| format!("{}/api/events/{event_id}/acks?channel=inventory", gw.base());

    // Seen, twice: recorded once, and announced to nobody.
    let (status, v) = call(
        &http,
        reqwest::Method::POST,
        acks_url(&gw1),
        &alice,
        Some(json!({"kind": "seen"})),
    )
    .await;
    assert_eq!((status, v["new"].as_bool()), (201, Some(true)), "{v}");
    let first_seen = v["ack"]["at"].as_u64().unwrap();
    let (status, v) = call(
        &http,
        reqwest::Method::POST,
        acks_url(&gw2),
        &alice,
        Some(json!({"kind": "seen"})),
    )
    .await;
    assert_eq!(
        (status, v["new"].as_bool(), v["ack"]["at"].as_u64()),
        (200, Some(false), Some(first_seen)),
        "{v}"
    );

    // Acknowledged on gateway 1: both streams get one ACK, and the next thing after it is the
    // next event (no ACK for seen, none for the repeat).
    let (status, v) = call(
        &http,
        reqwest::Method::POST,
        acks_url(&gw1),
        &alice,
        Some(json!({"kind": "acknowledged"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        acks_url(&gw2),
        &alice,
        Some(json!({"kind": "acknowledged"})),
    )
    .await;
    assert_eq!(status, 200, "a repeat changes nothing");
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/api/realtime/publish", gw1.base()),
        &publisher,
        Some(publish("marker")),
    )
    .await;
    assert_eq!(status, 200);
    for s in [&mut a, &mut b] {
        let ack = next_json(s).await;
        schemas.assert_valid("ack-event.schema.json", &ack);
        assert_eq!(ack["type"], "ACK", "{ack}");
        assert_eq!(ack["channel"], "inventory");
        assert_eq!(ack["payload"]["id"].as_str(), Some(event_id.as_str()));
        assert_eq!(ack["payload"]["data"]["user"], "alice");
        assert_eq!(ack["payload"]["data"]["kind"], "acknowledged");
        let next = next_json(s).await;
        assert_eq!(next["payload"]["id"], "marker", "one ACK only: {next}");
    }

    // Listed from either gateway, by anyone granted the channel: alice saw and acknowledged,
    // with her role.
    let (status, list) = call(&http, reqwest::Method::GET, acks_url(&gw2), &bob, None).await;
    assert_eq!(status, 200, "{list}");
    schemas.assert_valid("acks.schema.json", &list);
    let got: Vec<(&str, &str)> = list["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["user"].as_str().unwrap(), a["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [("alice", "seen"), ("alice", "acknowledged")]);
    assert_eq!(list["acks"][1]["role"], "operator");

    // Bad requests: a 4xx with a JSON body, nothing recorded.
    let orders_only = token("carol", None, json!(["orders"]));
    let base = gw1.base();
    let cases = [
        (
            format!("{base}/api/events/{event_id}/acks"),
            &alice,
            json!({"kind": "seen"}),
            400,
            "missing_channel",
        ),
        (acks_url(&gw1), &alice, json!({"kind": "liked"}), 400, "bad_ack"),
        (acks_url(&gw1), &alice, json!({}), 400, "bad_ack"),
        (
            acks_url(&gw1),
            &orders_only,
            json!({"kind": "seen"}),
            403,
            "forbidden_channel",
        ),
        (
            format!("{base}/api/events/{event_id}/acks?channel=nope"),
            &alice,
            json!({"kind": "seen"}),
            400,
            "unknown_channel",
        ),
        (
            format!("{base}/api/events/{event_id}/acks?channel=notifications"),
            &alice,
            json!({"kind": "seen"}),
            400,
            "private_channel",
        ),
        (
            format!("{base}/api/events/%7Bx%7D/acks?channel=inventory"),
            &alice,
            json!({"kind": "seen"}),
            404,
            "event_not_found",
        ),
    ];
    for (url, tok, body, want, code) in cases {
        let (status, v) = call(&http, reqwest::Method::POST, url.clone(), tok, Some(body)).await;
        assert_eq!((status, v["code"].as_str()), (want, Some(code)), "{url}: {v}");
        schemas.assert_valid("error.schema.json", &v);
    }
    let (_, after) = call(&http, reqwest::Method::GET, acks_url(&gw1), &alice, None).await;
    assert_eq!(
        after["acks"].as_array().unwrap().len(),
        2,
        "nothing more recorded: {after}"
    );

    // Reading a notification acknowledges it.
    let (status, n) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/notifications"),
        &publisher,
        Some(json!({"user_id": "alice", "type": "warning", "title": "Out of stock: prod_12"})),
    )
    .await;
    assert_eq!(status, 201, "{n}");
    let nid = n["id"].as_str().unwrap();
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/notifications/{nid}/read"),
        &alice,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let stored = redis
        .cli(&["HKEYS", &format!("rakuda:realtime:acks:{{notifications}}:{nid}")])
        .unwrap();
    let mut fields: Vec<&str> = stored.lines().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["acknowledged:alice", "seen:alice"],
        "the read is an acknowledgement"
    );
    let ttl: i64 = redis
        .cli(&["PTTL", &format!("rakuda:realtime:acks:{{inventory}}:{event_id}")])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 6 * 86_400_000 && ttl <= 7 * 86_400_000, "kept 7 days: {ttl} ms");
}
