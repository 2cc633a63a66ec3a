//! Presence (`docs/reference.md`, "Presence") on a real redis-server and two real gateway
//! processes: who is connected is right across the gateways, after a tab closes, and after a
//! gateway is killed with SIGKILL (within its stated expiry, three intervals); a stream that asks
//! (`presence=1`) gets `PRESENCE` messages with who joined and who left.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::{process::Service, schemas::Schemas, sse::SseStream, RedisServer};

const SECRET: &str = "presence-test-secret-at-least-32-chars";
const T: Duration = Duration::from_secs(10);
/// The gateways' presence interval: an announcement expires after three.
const INTERVAL_MS: u64 = 200;

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": sub, "exp": exp, "channels": ["inventory", "orders"]});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn stream(gw: &Service, user: &str, extra: &str) -> SseStream {
    let url = format!(
        "{}/api/realtime/events?channels=inventory&notifications=false{extra}&access_token={}",
        gw.base(),
        token(user)
    );
    let s = SseStream::connect(&url, None).await.unwrap();
    assert_eq!(s.status, 200);
    s
}

/// Users and connections of a `PRESENCE` message or a `GET /api/presence` answer.
fn roster(v: &Value) -> BTreeMap<String, u64> {
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["connections"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Reads `PRESENCE` messages until one has `want`; that one.
async fn until_roster(s: &mut SseStream, want: &[(&str, u64)], schemas: &Schemas) -> Value {
    let want: BTreeMap<String, u64> = want.iter().map(|(u, n)| ((*u).to_owned(), *n)).collect();
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "no PRESENCE with {want:?} within {T:?}");
        let m = s
            .next_message(T)
            .await
            .unwrap_or_else(|| panic!("no PRESENCE with {want:?}"));
        let v: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(v["type"], "PRESENCE", "only presence on this channel: {m:?}");
        schemas.assert_valid("sse-presence.schema.json", &v);
        if roster(&v) == want {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_is_right_across_gateways_after_a_tab_closes_and_after_a_gateway_dies() {
    let redis = RedisServer::start().unwrap();
    let interval = INTERVAL_MS.to_string();
    let env: HashMap<String, String> = [
        ("REDIS_URL", redis.url().as_str()),
        ("AUTH_MODE", "jwt"),
        ("JWT_HS256_SECRET", SECRET),
        ("RAKUDA__PRESENCE_INTERVAL_MS", interval.as_str()),
        ("SSE_HEARTBEAT_INTERVAL", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_sse-gateway"));
    let with_id = |id: &str| {
        let mut e = env.clone();
        e.insert("INSTANCE_ID".into(), id.into());
        e
    };
    let gw1 = Service::start(bin, &with_id("gw-1")).unwrap();
    let mut gw2 = Service::start(bin, &with_id("gw-2")).unwrap();
    let schemas = Schemas::load();

    // Carol watches on gateway 1: her first message has herself.
    let mut watch = stream(&gw1, "carol", "&presence=1").await;
    until_roster(&mut watch, &[("carol", 1)], &schemas).await;
    // Alice on gateway 1, bob twice (two tabs) on gateway 2.
    let alice = stream(&gw1, "alice", "").await;
    let bob1 = stream(&gw2, "bob", "").await;
    let _bob2 = stream(&gw2, "bob", "").await;
    let all = until_roster(&mut watch, &[("alice", 1), ("bob", 2), ("carol", 1)], &schemas).await;
    assert!(all["joins"].as_array().unwrap().len() <= 2, "{all}");
    // The same from either gateway's endpoint.
    let http = reqwest::Client::new();
    for gw in [&gw1, &gw2] {
        let v: Value = http
            .get(format!("{}/api/presence?channel=inventory", gw.base()))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(roster(&v), roster(&all), "{v}");
        assert_eq!(v["connections"], 4);
    }

    // A tab closes: bob has one connection left; alice closes: she left.
    drop(bob1);
    until_roster(&mut watch, &[("alice", 1), ("bob", 1), ("carol", 1)], &schemas).await;
    drop(alice);
    let v = until_roster(&mut watch, &[("bob", 1), ("carol", 1)], &schemas).await;
    assert_eq!(v["leaves"], json!(["alice"]), "{v}");

    // Gateway 2 dies without a word: bob is gone within three intervals (and a tick).
    gw2.kill9();
    let killed = Instant::now();
    let v = until_roster(&mut watch, &[("carol", 1)], &schemas).await;
    let took = killed.elapsed();
    assert_eq!(v["leaves"], json!(["bob"]), "{v}");
    assert!(
        took < Duration::from_millis(5 * INTERVAL_MS + 500),
        "a dead gateway's users went after {took:?}"
    );

    // Refused: no channel, a channel the token does not grant, the private one.
    for (query, status, code) in [
        ("", 400, "missing_channel"),
        ("?channel=pricing", 403, "forbidden_channel"),
        ("?channel=notifications", 400, "unknown_channel"),
    ] {
        let r = http
            .get(format!("{}/api/presence{query}", gw1.base()))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{query}: {v}");
    }
}
