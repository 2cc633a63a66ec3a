//! Per-user notifications (seed 004) on a real redis-server and a real gateway process in
//! `AUTH_MODE=jwt`: each device sees exactly its user's notifications, a read on one device
//! clears on the others within a second, an offline device gets what it missed once, and
//! another user's notifications are out of reach however the request is dressed up.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::{
    process::Service,
    schemas::Schemas,
    sse::{Message, SseStream},
    RedisServer,
};

const SECRET: &str = "notifications-test-secret-32-chars-long";
const T: Duration = Duration::from_secs(10);

fn token(sub: &str, role: Option<&str>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims = json!({"sub": sub, "exp": exp, "channels": ["orders"]});
    if let Some(r) = role {
        claims["role"] = json!(r);
        claims["channels"] = json!("*");
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

struct Setup {
    redis: RedisServer,
    env: HashMap<String, String>,
    gw: Service,
    http: reqwest::Client,
    publisher: String,
    schemas: Schemas,
}

impl Setup {
    fn start(extra: &[(&str, &str)]) -> Setup {
        let redis = RedisServer::start().unwrap();
        let mut env: HashMap<String, String> = [
            ("REDIS_URL", redis.url().as_str()),
            ("AUTH_MODE", "jwt"),
            ("JWT_HS256_SECRET", SECRET),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let gw = Service::start(Path::new(env!("CARGO_BIN_EXE_sse-gateway")), &env).unwrap();
        Setup {
            redis,
            env,
            gw,
            http: reqwest::Client::new(),
            publisher: token("svc", Some("publisher")),
            schemas: Schemas::load(),
        }
    }

    async fn stream(&self, user: &str, query: &str, last: Option<&str>) -> SseStream {
        self.stream_at(&self.gw, user, query, last).await
    }

    async fn stream_at(&self, gw: &Service, user: &str, query: &str, last: Option<&str>) -> SseStream {
        let sep = if query.is_empty() { "" } else { "&" };
        let url = format!(
            "{}/api/realtime/events?access_token={}{sep}{query}",
            gw.base(),
            token(user, None)
        );
        let s = SseStream::connect(&url, last).await.unwrap();
        assert_eq!(s.status, 200, "stream of {user}");
        s
    }

    /// Creates a notification; returns its id.
    async fn notify(&self, user: &str, title: &str) -> String {
        let body = json!({"user_id": user, "type": "warning", "title": title, "message": "stock is out"});
        self.schemas.assert_valid("notification-create.schema.json", &body);
        let r = self
            .http
            .post(format!("{}/api/notifications", self.gw.base()))
            .bearer_auth(&self.publisher)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.unwrap();
        self.schemas.assert_valid("notification.schema.json", &v);
        assert_eq!((v["user_id"].as_str(), v["read"].as_bool()), (Some(user), Some(false)));
        v["id"].as_str().unwrap().to_owned()
    }

    async fn call(&self, method: reqwest::Method, path: &str, user_token: &str) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.gw.base()))
            .bearer_auth(user_token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            self.schemas.assert_valid("error.schema.json", &v);
        }
        (status, v)
    }
}

/// `key` of every object in the array `list` (e.g. the ids of a list of notifications).
fn strings<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|n| n[key].as_str().expect("a string"))
        .collect()
}

/// Events of a message: `(type, payload)` each (a grouped message gives each of its payloads).
fn events(m: &Message) -> Vec<(String, Value)> {
    let v: Value = serde_json::from_str(&m.data).unwrap();
    let ty = v["type"].as_str().unwrap_or_default().to_owned();
    match v.get("payloads") {
        Some(Value::Array(ps)) => ps.iter().map(|p| (ty.clone(), p.clone())).collect(),
        _ => vec![(ty, v["payload"].clone())],
    }
}

/// Reads the stream until a `NOTIFICATION` titled `until`; returns every notification id seen
/// (the marker's included) and every other message.
/// Notification messages are checked against their schemas on the way.
async fn until_marker(s: &mut SseStream, until: &str) -> (Vec<String>, Vec<Value>) {
    thread_local! {
        static SCHEMAS: Schemas = Schemas::load();
    }
    let mut ids = Vec::new();
    let mut other = Vec::new();
    loop {
        let m = s.next_message(T).await.expect("stream open");
        let v: Value = serde_json::from_str(&m.data).unwrap();
        if v["type"] == "NOTIFICATION" {
            let schema = if v.get("payloads").is_some() {
                "sse-group.schema.json"
            } else {
                "notification-event.schema.json"
            };
            SCHEMAS.with(|s| s.assert_valid(schema, &v));
        }
        for (ty, p) in events(&m) {
            if ty == "NOTIFICATION" {
                ids.push(p["id"].as_str().unwrap().to_owned());
                if p["data"]["notification"]["title"] == until {
                    return (ids, other);
                }
            } else {
                other.push(serde_json::from_str(&m.data).unwrap());
            }
        }
    }
}

async fn snapshot(s: &mut SseStream, schemas: &Schemas) -> Value {
    let m = s.next_message(T).await.expect("a first message");
    let v: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(v["type"], "NOTIFICATION_UNREAD", "unread notifications come first: {v}");
    schemas.assert_valid("sse-notification-unread.schema.json", &v);
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn two_devices_and_another_user_each_see_their_own_and_a_read_clears_everywhere() {
    let t = Setup::start(&[]);
    let (alice, bob) = (token("alice", None), token("bob", None));
    let mut a = t.stream("alice", "", None).await;
    let mut b = t.stream("alice", "named=true", None).await;
    let mut c = t.stream("bob", "", None).await;
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(snapshot(s, &t.schemas).await["unread"], 0);
    }
    let a1 = t.notify("alice", "a1").await;
    let b1 = t.notify("bob", "b1").await;
    let a2 = t.notify("alice", "a2").await;
    t.notify("alice", "end-a").await;
    t.notify("bob", "end-b").await;
    for s in [&mut a, &mut b] {
        let (ids, other) = until_marker(s, "end-a").await;
        assert_eq!(&ids[..2], [a1.clone(), a2.clone()], "alice's, in order, once");
        assert_eq!(ids.len(), 3);
        assert!(other.is_empty(), "{other:?}");
    }
    let (ids, _) = until_marker(&mut c, "end-b").await;
    assert_eq!((ids.len(), &ids[0]), (2, &b1), "bob sees only his");

    // Read on device A: device B clears within a second.
    let (status, v) = t
        .call(reqwest::Method::POST, &format!("/api/notifications/{a1}/read"), &alice)
        .await;
    let sent = Instant::now();
    assert_eq!((status, v["unread"].as_u64()), (200, Some(2)), "{v}");
    let m = b.next_message(Duration::from_secs(1)).await.expect("B still open");
    let took = sent.elapsed();
    assert_eq!(m.event.as_deref(), Some("NOTIFICATION_READ"), "{m:?}");
    let read: Value = serde_json::from_str(&m.data).unwrap();
    t.schemas.assert_valid("notification-read.schema.json", &read);
    assert_eq!(read["payload"]["data"]["ids"], json!([a1]));
    assert_eq!(read["payload"]["data"]["unread"], 2);
    assert!(
        took < Duration::from_secs(1),
        "read reached the other device after {took:?}"
    );
    // A gets it too (it may have several tabs); bob's stream gets nothing of it.
    let m = a.next_message(T).await.unwrap();
    assert_eq!(events(&m)[0].0, "NOTIFICATION_READ");

    // The state is the same from any device.
    let (_, page) = t.call(reqwest::Method::GET, "/api/notifications", &alice).await;
    t.schemas.assert_valid("notifications-page.schema.json", &page);
    assert_eq!((page["unread"].as_u64(), page["total"].as_u64()), (Some(2), Some(3)));
    let first_read: Vec<bool> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["id"] == a1.as_str())
        .map(|n| n["read"].as_bool().unwrap())
        .collect();
    assert_eq!(first_read, [true]);
    let (_, unread) = t
        .call(reqwest::Method::GET, "/api/notifications?unread=true", &alice)
        .await;
    assert_eq!(unread["notifications"].as_array().unwrap().len(), 2);

    // Read-all on B: A clears everything.
    let (status, v) = t
        .call(reqwest::Method::POST, "/api/notifications/read-all", &alice)
        .await;
    assert_eq!(
        (status, v["marked"].as_u64(), v["unread"].as_u64()),
        (200, Some(2), Some(0))
    );
    let m = a.next_message(T).await.unwrap();
    let all: Value = serde_json::from_str(&m.data).unwrap();
    t.schemas.assert_valid("notification-read.schema.json", &all);
    assert_eq!(
        (all["payload"]["id"].as_str(), all["payload"]["data"]["all"].as_bool()),
        (Some("*"), Some(true))
    );

    // Bob saw none of alice's reads: the next thing on his stream is his own next one.
    t.notify("bob", "end-b2").await;
    let (ids, other) = until_marker(&mut c, "end-b2").await;
    assert_eq!((ids.len(), other.len()), (1, 0), "{other:?}");
    let (_, bobs) = t.call(reqwest::Method::GET, "/api/notifications", &bob).await;
    assert_eq!(bobs["unread"], 3, "bob's unread state is his own");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_device_gets_the_unread_ones_once() {
    let t = Setup::start(&[]);
    let mut s = t.stream("alice", "", None).await;
    snapshot(&mut s, &t.schemas).await;
    let first = t.notify("alice", "before").await;
    let (ids, _) = until_marker(&mut s, "before").await;
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0], first);
    let cursor = s.last_event_id.clone().expect("a cursor");
    drop(s);

    let mut posted = Vec::new();
    for i in 0..100 {
        posted.push(t.notify("alice", &format!("offline {i}")).await);
    }
    // Back with its Last-Event-ID: exactly the hundred it missed, in order, once.
    let mut s = t.stream("alice", "", Some(&cursor)).await;
    t.notify("alice", "back").await;
    let (ids, other) = until_marker(&mut s, "back").await;
    assert!(
        other.is_empty(),
        "a resumed stream replays, it sends no snapshot: {other:?}"
    );
    assert_eq!(&ids[..100], &posted[..], "the missed ones, in order, once");
    assert_eq!(ids.len(), 101);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no duplicates");
    drop(s);

    // A new device (no cursor): the unread ones first, newest first, up to the snapshot limit,
    // then live ones, none of them twice.
    let mut s = t.stream("alice", "", None).await;
    let snap = snapshot(&mut s, &t.schemas).await;
    assert_eq!(snap["unread"], 102);
    let listed = strings(&snap["notifications"], "id");
    assert_eq!(listed.len(), 100, "notifications.snapshot_limit");
    assert_eq!(listed[1], posted[99], "newest first (after `back`)");
    assert!(!listed.contains(&first.as_str()), "the oldest fall outside the limit");
    let live = t.notify("alice", "live").await;
    let (ids, _) = until_marker(&mut s, "live").await;
    assert_eq!(ids, [live], "only what came after the snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_notifications_stay_out_of_reach_and_bad_requests_say_why() {
    let t = Setup::start(&[
        ("RAKUDA__NOTIFICATIONS__MAX_PER_USER", "3"),
        ("RAKUDA__MAX_BODY_BYTES", "10000"),
    ]);
    let (alice, bob) = (token("alice", None), token("bob", None));
    let a1 = t.notify("alice", "a1").await;

    // Another user's id: not found, and alice's state is untouched.
    let (status, v) = t
        .call(reqwest::Method::POST, &format!("/api/notifications/{a1}/read"), &bob)
        .await;
    assert_eq!((status, v["code"].as_str()), (404, Some("notification_not_found")));
    let (status, v) = t
        .call(reqwest::Method::GET, &format!("/api/notifications?before={a1}"), &bob)
        .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_before")));
    let (_, page) = t.call(reqwest::Method::GET, "/api/notifications", &alice).await;
    assert_eq!(page["unread"], 1);

    // Filters and query tricks cannot reach alice's private view.
    for query in [
        format!("channels=notifications&ids={a1}"),
        "channels=notifications&types=NOTIFICATION&user_id=alice&user=alice&sub=alice".into(),
    ] {
        let mut s = t.stream("bob", &query, None).await;
        let snap = snapshot(&mut s, &t.schemas).await;
        assert_eq!(snap["user_id"], "bob");
        let owners: HashSet<&str> = strings(&snap["notifications"], "user_id").into_iter().collect();
        assert!(owners.iter().all(|o| *o == "bob"), "{query}: {owners:?}");
        t.notify("alice", "secret").await;
        t.notify("bob", "mine").await;
        let (ids, other) = until_marker(&mut s, "mine").await;
        assert_eq!((ids.len(), other.len()), (1, 0), "{query}: {other:?}");
    }
    let url = format!(
        "{}/api/realtime/events?access_token={bob}&channels=notifications:alice",
        t.gw.base()
    );
    let r = t.http.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "another user's channel name is not a channel");

    // Only /api/notifications writes the private channel, and only a publisher may.
    let (status, v) = {
        let r = t
            .http
            .post(format!("{}/api/realtime/publish", t.gw.base()))
            .bearer_auth(&t.publisher)
            .json(&json!({"channel": "notifications", "type": "NOTIFICATION",
                "payload": {"id": "x", "action": "created", "data": {"user_id": "alice"}}}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!((status, v["code"].as_str()), (403, Some("private_channel")), "{v}");
    let post = |tok: &str, body: Value| {
        t.http
            .post(format!("{}/api/notifications", t.gw.base()))
            .bearer_auth(tok)
            .json(&body)
    };
    let good = json!({"user_id": "alice", "title": "t"});
    let mut bad_bodies = vec![
        (post(&alice, good.clone()), 403, "forbidden_role"),
        (
            post(&t.publisher, json!({"user_id": "alice", "type": "fatal", "title": "t"})),
            400,
            "bad_notification",
        ),
        (
            post(&t.publisher, json!({"user_id": "alice", "title": "  "})),
            400,
            "bad_title",
        ),
        (
            post(&t.publisher, json!({"user_id": "a{b}", "title": "t"})),
            400,
            "bad_user",
        ),
        (
            post(&t.publisher, json!({"user_id": "alice", "title": "t", "extra": 1})),
            400,
            "bad_notification",
        ),
        (
            post(
                &t.publisher,
                json!({"user_id": "alice", "title": "t", "message": "m".repeat(20_000)}),
            ),
            413,
            "body_too_large",
        ),
    ];
    bad_bodies.push((
        t.http
            .get(format!("{}/api/notifications?limit=0", t.gw.base()))
            .bearer_auth(&alice),
        400,
        "bad_limit",
    ));
    bad_bodies.push((
        t.http
            .get(format!("{}/api/notifications?unread=maybe", t.gw.base()))
            .bearer_auth(&alice),
        400,
        "bad_unread",
    ));
    bad_bodies.push((
        t.http.get(format!("{}/api/notifications", t.gw.base())),
        401,
        "missing_token",
    ));
    for (i, (req, status, code)) in bad_bodies.into_iter().enumerate() {
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        t.schemas.assert_valid("error.schema.json", &v);
        assert_eq!((got, v["code"].as_str()), (status, Some(code)), "case {i}: {v}");
    }

    // A retried create with the same idempotency key stores and delivers one.
    let body = json!({"user_id": "carol", "title": "once", "idempotency_key": "order-81-out-of-stock"});
    let first = post(&t.publisher, body.clone()).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let again = post(&t.publisher, body).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    let (first, again): (Value, Value) = (first.json().await.unwrap(), again.json().await.unwrap());
    assert_eq!(first["id"], again["id"]);

    // The per-user cap: the oldest go.
    let mut ids = vec![first["id"].as_str().unwrap().to_owned()];
    for i in 0..4 {
        ids.push(t.notify("carol", &format!("c{i}")).await);
    }
    let (_, page) = t
        .call(reqwest::Method::GET, "/api/notifications", &token("carol", None))
        .await;
    let kept = strings(&page["notifications"], "id");
    assert_eq!(kept, [ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]);
    assert_eq!((page["total"].as_u64(), page["unread"].as_u64()), (Some(3), Some(3)));
    // Paging with `before`.
    let (_, next) = t
        .call(
            reqwest::Method::GET,
            &format!("/api/notifications?limit=2&before={}", ids[4]),
            &token("carol", None),
        )
        .await;
    assert_eq!(next["notifications"].as_array().unwrap().len(), 2);
    assert_eq!(next["next_before"], ids[2].as_str());
}

/// The seam: a notification stored before the stream read its unread ones but published after
/// the stream registered is in both; the stream sends it once (in the snapshot).
#[tokio::test(flavor = "multi_thread")]
async fn a_notification_both_in_the_snapshot_and_live_arrives_once() {
    use event_bus::{Action, Broker, BusConfig, EventType, NewEvent, Payload, RedisBus};
    let t = Setup::start(&[]);
    let id = "6f1c2b1e-0000-4000-8000-000000000001";
    // Stored, not yet published: as `POST /api/notifications` leaves it between its two steps.
    let stored = json!({"id": id, "user_id": "alice", "type": "info", "title": "seam", "message": "",
        "created_at": "2026-11-23T03:00:00.000Z"});
    let user = "rakuda:realtime:user:{alice}";
    t.redis
        .cli(&["HSET", &format!("{user}:notifications"), id, &stored.to_string()])
        .unwrap();
    t.redis.cli(&["ZADD", &format!("{user}:order"), "1", id]).unwrap();
    t.redis.cli(&["ZADD", &format!("{user}:unread"), "1", id]).unwrap();
    let mut s = t.stream("alice", "", None).await;
    let snap = snapshot(&mut s, &t.schemas).await;
    assert_eq!(snap["notifications"][0]["id"], id);
    // Now it is published, after the stream registered.
    let mut config = BusConfig {
        redis_url: Some(t.redis.url()),
        ..Default::default()
    };
    config
        .channels
        .push(sse_gateway::config::NotificationsConfig::default().channel_spec());
    let bus = RedisBus::connect(config).await.unwrap();
    let mut n = stored.clone();
    n["read"] = json!(false);
    bus.publish(
        &event_bus::Channel::new("notifications")
            .unwrap()
            .user_partition("alice")
            .unwrap(),
        NewEvent::new(
            EventType::new("NOTIFICATION").unwrap(),
            Payload::new(id, Action::Created).with_data(json!({"user_id": "alice", "notification": n, "unread": 1})),
        ),
    )
    .await
    .unwrap();
    t.notify("alice", "after").await;
    let (ids, _) = until_marker(&mut s, "after").await;
    assert_eq!(ids.len(), 1, "the seam's notification is not sent again: {ids:?}");
}

fn partition(user: &str) -> String {
    event_bus::Channel::new("notifications")
        .unwrap()
        .user_partition(user)
        .unwrap()
        .to_string()
}

fn shard_subscribers(redis: &RedisServer, channel: &str) -> u64 {
    let out = redis
        .cli(&["PUBSUB", "SHARDNUMSUB", &format!("rakuda:realtime:live:{{{channel}}}")])
        .expect("PUBSUB");
    out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Scale-out: a user's notifications live in the user's partition of the private channel, its
/// own stream and shard channel (in its own hash slot on a Cluster), and only the gateway that
/// serves the user follows it, until `follow_grace_ms` after the user's last stream there.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_notifications_reach_only_the_gateway_that_serves_the_user() {
    let t = Setup::start(&[("RAKUDA__FOLLOW_GRACE_MS", "200")]);
    let gw2 = Service::start(Path::new(env!("CARGO_BIN_EXE_sse-gateway")), &t.env).unwrap();
    let (alice, bob) = (partition("alice"), partition("bob"));
    assert_ne!(alice, bob);
    let mut a = t.stream("alice", "", None).await;
    let mut b = t.stream_at(&gw2, "bob", "", None).await;
    snapshot(&mut a, &t.schemas).await;
    snapshot(&mut b, &t.schemas).await;
    // Each partition has one subscriber: the gateway of its user, not the other.
    testkit::until("each user's gateway follows the user's partition", T, || {
        shard_subscribers(&t.redis, &alice) == 1 && shard_subscribers(&t.redis, &bob) == 1
    })
    .await;
    assert_eq!(
        shard_subscribers(&t.redis, "notifications"),
        0,
        "nobody follows the whole channel"
    );

    // Created through the gateway bob is not on: it reaches alice live, once, on hers.
    let id = t.notify("alice", "partitioned").await;
    let m = a.next_message(T).await.expect("her notification");
    let v: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(
        v["channel"], "notifications",
        "clients see the channel, not the partition: {v}"
    );
    let ids: Vec<String> = events(&m)
        .iter()
        .map(|(_, p)| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![id.clone()]);
    let bob_id = t.notify("bob", "his").await;
    let (ids, _) = until_marker(&mut b, "his").await;
    assert_eq!(ids, vec![bob_id]);
    // Stored in alice's partition only, which expires with its retention.
    let key = format!("rakuda:realtime:stream:{{{alice}}}");
    assert_eq!(t.redis.cli(&["XLEN", &key]).unwrap().trim(), "1");
    let ttl: i64 = t.redis.cli(&["PTTL", &key]).unwrap().trim().parse().unwrap();
    assert!(ttl > 0, "a partition's stream expires: PTTL {ttl}");
    assert_eq!(
        t.redis
            .cli(&["XLEN", "rakuda:realtime:stream:{notifications}"])
            .unwrap()
            .trim(),
        "0",
        "nothing in the shared stream"
    );

    // Her cursor names her partition: a resume replays what she missed there, once.
    let last = a.last_event_id.clone().expect("a cursor");
    drop(a);
    let missed = t.notify("alice", "missed").await;
    let mut a = t.stream("alice", "", Some(&last)).await;
    let (ids, _) = until_marker(&mut a, "missed").await;
    assert_eq!(ids, vec![missed], "the one missed, not the snapshot again");
    // She leaves: her gateway stops following her partition after the grace; bob's stays.
    drop(a);
    testkit::until("alice's partition unfollowed", T, || {
        shard_subscribers(&t.redis, &alice) == 0
    })
    .await;
    assert_eq!(shard_subscribers(&t.redis, &bob), 1);
    drop(b);
}
