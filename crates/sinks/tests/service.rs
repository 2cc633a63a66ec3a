//! The `sinks` service as deployed: a real redis-server, the binary, events published on the
//! bus, and local receivers of the test's own standing in for Slack, Discord, LINE and a
//! webhook endpoint, with their documented failures (`testkit::receiver`): each gets the
//! provider's format; a 429's hint is honoured; a lost answer is retried with the same key and
//! LINE's 409 counts as accepted; a 404 disables Discord; a 400 is a dead letter an operator lists
//! and replays; secrets never reach the log; a bad configuration exits 64 naming the key.

mod common;

use std::{path::Path, time::Duration};

use common::*;

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload};
use serde_json::json;
use sinks::destination::webhook::{key_of, sign};
use testkit::{
    process::{assert_bad_config, env, Service},
    receiver::{Receiver, Reply},
    RedisServer,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const LINE_TOKEN: &str = "line-token-never-logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_gets_its_format_and_its_failures_are_handled() {
    let redis = RedisServer::start().unwrap();
    // Slack: the first request is told to wait 1 s.
    let slack = Receiver::start(|_, n| match n {
        0 => Reply::Status(429, vec![("retry-after".into(), "1".into())], "rate_limited".into()),
        _ => Reply::Status(200, vec![], "ok".into()),
    });
    // LINE: the first answer is lost; a retry with a key seen before is "already accepted".
    let line = Receiver::start(|r, n| {
        if n == 0 {
            return Reply::Drop;
        }
        let _ = r;
        Reply::Status(
            409,
            vec![("x-line-accepted-request-id".into(), "req-1".into())],
            "{}".into(),
        )
    });
    let discord =
        Receiver::start(|_, _| Reply::Status(404, vec![], r#"{"message": "Unknown Webhook", "code": 10015}"#.into()));
    let hook = Receiver::start(|_, _| Reply::ok("{}"));
    // Asks for an hour's pause: the dashboard shows it backing off.
    let patient =
        Receiver::start(|_, _| Reply::Status(429, vec![("retry-after".into(), "3600".into())], "later".into()));
    // Refuses everything until the operator replays (then takes it).
    let strict = Receiver::start(|_, n| match n {
        0 => Reply::Status(400, vec![], "bad".into()),
        _ => Reply::ok("{}"),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sinks.toml");
    let slack_url = format!("{}/services/T000/B000/slack-secret-path", slack.base());
    std::fs::write(
        &config,
        format!(
            r#"
[destinations.slack]
kind = "slack"
url = "env:TEST_SLACK_URL"
[destinations.line]
kind = "line"
token = "env:TEST_LINE_TOKEN"
to = "U4af4980629"
url = "{line}/v2/bot/message/push"
[destinations.discord]
kind = "discord"
url = "{discord}/api/webhooks/1/discord-secret"
[destinations.hook]
kind = "webhook"
url = "{hook}/hook"
secrets = ["{SECRET}"]
[destinations.strict]
kind = "webhook"
url = "{strict}/hook"
secrets = ["{SECRET}"]
[destinations.patient]
kind = "webhook"
url = "{patient}/hook"
secrets = ["{SECRET}"]

[routes.stockouts]
channels = ["inventory"]
when = ["payload.data.isAvailable == false"]
destinations = ["slack", "line", "discord"]

[routes.orders]
channels = ["orders"]
destinations = ["hook", "strict", "patient"]
"#,
            line = line.base(),
            discord = discord.base(),
            hook = hook.base(),
            strict = strict.base(),
            patient = patient.base(),
        ),
    )
    .unwrap();
    let url = redis.url();
    let base = [
        ("REDIS_URL", url.as_str()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("TEST_SLACK_URL", slack_url.as_str()),
        ("TEST_LINE_TOKEN", LINE_TOKEN),
        ("RUST_LOG", "debug"),
        ("RAKUDA__DELIVERY__BACKOFF_INITIAL_MS", "100"),
        ("RAKUDA__DELIVERY__TIMEOUT_MS", "2000"),
    ];
    let svc = Service::start(bin(), &env(&base)).unwrap();
    let bus = ready_bus(&svc, &url).await;
    bus.publish(&Channel::INVENTORY, stockout("prod_1")).await.unwrap();
    let back_in_stock = NewEvent::new(
        EventType::INVENTORY_CHANGE,
        Payload::new("prod_2", Action::Updated).with_data(json!({"isAvailable": true})),
    );
    bus.publish(&Channel::INVENTORY, back_in_stock).await.unwrap();
    bus.publish(&Channel::INVENTORY, stockout("prod_3")).await.unwrap();
    let orders: Vec<_> = (0..5).map(|i| format!("ord_{i}")).collect();
    for o in &orders {
        bus.publish(&Channel::ORDERS, order(o)).await.unwrap();
    }

    // Slack: both stock-outs (not the back-in-stock), the first after its 429 waited 1 s, and
    // never two within a second (its rate).
    until("slack gets 3 requests", || slack.requests().len() >= 3).await;
    let s = slack.requests();
    assert!(s[0].target.ends_with("/services/T000/B000/slack-secret-path"));
    assert!(
        s[1].at - s[0].at >= Duration::from_millis(1000),
        "the Retry-After was not honoured"
    );
    assert!(
        s[2].at - s[1].at >= Duration::from_millis(900),
        "faster than 1 per second"
    );
    assert_eq!(s[0].json()["text"], s[1].json()["text"], "the retried message");
    assert!(
        s[1].json()["text"].as_str().unwrap().contains("prod_1"),
        "{}",
        s[1].json()
    );
    assert!(s[2].json()["text"].as_str().unwrap().contains("prod_3"));
    assert!(s[2].json()["blocks"][0]["text"]["text"].is_string());

    // LINE: the lost answer's retry carries the same key, and 409 was taken as accepted.
    until("line gets 3 requests", || line.requests().len() >= 3).await;
    let l = line.requests();
    assert_eq!(
        l[0].header("x-line-retry-key"),
        l[1].header("x-line-retry-key"),
        "the same key on the retry"
    );
    assert_ne!(
        l[1].header("x-line-retry-key"),
        l[2].header("x-line-retry-key"),
        "one key per event"
    );
    assert_eq!(
        l[0].header("authorization"),
        Some(format!("Bearer {LINE_TOKEN}").as_str())
    );
    assert_eq!(l[0].json()["to"], "U4af4980629");

    // Discord: 404 disabled it after the first request; the second stock-out waits.
    until_metric(&svc, "sinks_disabled{destination=\"discord\"}", 1.0).await;
    assert_eq!(discord.requests().len(), 1, "no request after the 404");
    assert!(discord.requests()[0].target.ends_with("?wait=true"));

    // The webhook: every order once, each id distinct, each signature valid.
    until("hook gets 5", || hook.requests().len() >= 5).await;
    let key = key_of(SECRET).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for r in hook.requests() {
        let id = r.header("webhook-id").unwrap().to_owned();
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert_eq!(r.header("webhook-signature").unwrap(), sign(&key, &id, ts, &r.body));
        ids.insert(id);
    }
    assert_eq!(ids.len(), 5);

    // The strict endpoint: a 400 is a dead letter, listed and replayed by the operator, and the
    // replay carries the first attempt's webhook-id.
    until_metric(&svc, "sinks_dead_letters_total{destination=\"strict\"}", 1.0).await;
    let run = |cmd: &str| {
        let out = std::process::Command::new(bin())
            .args([cmd, "strict"])
            .envs(env(&base))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // The dashboard's view of them, on a gateway over the same Redis.
    let gw_vars = [("REDIS_URL", url.as_str()), ("AUTH_MODE", "dev"), ("RUST_LOG", "warn")];
    let gw = Service::start(&testkit::process::workspace_bin("sse-gateway"), &env(&gw_vars)).unwrap();
    let admin = testkit::process::dev_token(&gw.base(), "sub=ops").await;
    until("patient asked for its pause", || !patient.requests().is_empty()).await;
    let view = testkit::process::get_json(&format!("{}/api/sinks/destinations", gw.base()), &admin).await;
    let of = |name: &str| {
        view["destinations"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} is not in {view}"))
    };
    let (discord_view, strict_view, patient_view, hook_view) = (of("discord"), of("strict"), of("patient"), of("hook"));
    assert_eq!(discord_view["state"], "disabled", "{view}");
    assert!(
        discord_view["disabled_because"].as_str().unwrap().contains("404"),
        "{view}"
    );
    assert_eq!(
        (strict_view["dead_letters"].as_u64(), strict_view["kind"].as_str()),
        (Some(1), Some("webhook")),
        "{view}"
    );
    assert!(
        strict_view["last_error"].as_str().unwrap().contains("HTTP 400"),
        "{view}"
    );
    assert_eq!(patient_view["state"], "backing_off", "{view}");
    let until_ms = patient_view["backing_off_until"].as_u64().unwrap();
    assert!(
        until_ms > view["at"].as_u64().unwrap() + 3_000_000,
        "an hour's pause: {view}"
    );
    assert_eq!(hook_view["state"], "healthy", "{view}");
    assert!(hook_view["last_accepted_at"].as_u64().is_some(), "{view}");
    let viewer = testkit::process::dev_token(&gw.base(), "sub=viewer&role=none").await;
    let refused = reqwest::Client::new()
        .get(format!("{}/api/sinks/destinations", gw.base()))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403, "the admin's view only");
    // And on the dashboard, in Chromium.
    let shot = std::env::temp_dir().join(format!("rakuda-destinations-{}.png", std::process::id()));
    let page = testkit::node::NodeScript::start(
        "destinations-test.mjs",
        &[
            &gw.base(),
            shot.to_str().unwrap(),
            "discord=disabled,patient=backing_off,hook=healthy",
        ],
        &[],
    )
    .finish(Duration::from_secs(60));
    assert_eq!(page["consoleErrors"], json!([]), "{page}");
    let row = |name: &str| {
        page["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            .map(|r| r["cells"].clone())
            .unwrap_or_else(|| panic!("no row {name}: {page}"))
    };
    assert_eq!(row("strict")[4], "1", "its dead letter: {page}");
    assert!(
        row("patient")[2].as_str().unwrap().starts_with("backing off until"),
        "{page}"
    );
    assert_eq!(row("discord")[1], "discord", "{page}");

    let listed = run("dead-letters");
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("HTTP 400"), "{listed}");
    assert!(run("replay").starts_with("1 dead letters"));
    until("strict gets all 5, the first again", || strict.requests().len() >= 6).await;
    let st = strict.requests();
    assert!(
        st[1..]
            .iter()
            .any(|r| r.header("webhook-id") == st[0].header("webhook-id")),
        "replayed with its key"
    );

    // Secrets never in the log, even at debug.
    let log = svc.log_text();
    for secret in ["slack-secret-path", LINE_TOKEN, "discord-secret", &SECRET[6..]] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn a_bad_configuration_stops_start_up_naming_the_key() {
    assert_bad_config(
        bin(),
        &[("REDIS_URL", "redis://127.0.0.1:1")],
        &[
            ("RAKUDA__DELIVERY__MAX_ATTEMPTS", "0", "delivery.max_attempts"),
            ("RAKUDA__DELIVERY__TIMEOUT_MS", "5", "delivery.timeout_ms"),
            ("RAKUDA__ROUTES__X__DESTINATIONS", "[]", "routes.x.destinations"),
        ],
    );
}

/// 5,000 orders to three destinations while two replicas run and one of them is killed with
/// SIGKILL at random points and started again: each receiver gets every (event, destination)
/// key at least once (a key more than once on the wire is what idempotency keys are for), and
/// no key it was not meant to get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_by_key_through_kill_9_with_two_replicas() {
    const EVENTS: usize = 5_000;
    let redis = RedisServer::start().unwrap();
    let hook_a = Receiver::start(|_, _| Reply::ok("{}"));
    let hook_b = Receiver::start(|_, _| Reply::ok("{}"));
    let line = Receiver::start(|_, _| Reply::ok("{}"));
    let (_dir, config) = config_file(&format!(
        r#"
[destinations.a]
kind = "webhook"
url = "{a}/hook"
secrets = ["{SECRET}"]
[destinations.b]
kind = "webhook"
url = "{b}/hook"
secrets = ["{SECRET}"]
[destinations.line]
kind = "line"
token = "t"
to = "U1"
url = "{line}/v2/bot/message/push"
[delivery]
lease_ttl_ms = 1000
timeout_ms = 300
backoff_initial_ms = 50
[delivery.rates]
a = 5000.0
b = 5000.0
line = 5000.0
[routes.orders]
channels = ["orders"]
destinations = ["a", "b", "line"]
"#,
        a = hook_a.base(),
        b = hook_b.base(),
        line = line.base(),
    ));
    let url = redis.url();
    let replica = |name: &str| {
        let vars = [
            ("REDIS_URL", url.as_str()),
            ("CONFIG_FILE", config.to_str().unwrap()),
            ("INSTANCE_ID", name),
            ("RUST_LOG", "warn"),
        ];
        Service::start(bin(), &env(&vars)).unwrap()
    };
    let mut replicas = [replica("s-1"), replica("s-2")];
    until("ready", || {
        testkit::http_status(replicas[0].port, "/readyz") == Some(200)
    })
    .await;
    let bus = event_bus::connect(BusConfig {
        redis_url: Some(url.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ids = Vec::with_capacity(EVENTS);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut kills = 0;
    for batch in 0..EVENTS / 100 {
        let events = (0..100)
            .map(|i| (Channel::ORDERS, order(&format!("ord_{batch}_{i}"))))
            .collect();
        ids.extend(bus.publish_batch(events).await.unwrap().into_iter().map(|p| p.id));
        // Now and then, kill -9 a replica (either; never both at once) and start it again.
        if next() % 6 == 0 {
            let which = (next() % 2) as usize;
            replicas[which].kill9();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(next() % 300)).await; // a random point in time
            replicas[which] = replica(&format!("s-{}", which + 1));
        }
    }
    assert!(kills >= 3, "only {kills} kills");
    let expected = |d: &str| -> std::collections::BTreeSet<String> {
        ids.iter()
            .map(|id| sinks::key::of(&Channel::ORDERS, *id, d).to_string())
            .collect()
    };
    let got = |r: &Receiver, header: &str| -> std::collections::BTreeSet<String> {
        r.requests()
            .iter()
            .filter_map(|q| q.header(header).map(|h| h.trim_start_matches("msg_").to_owned()))
            .collect()
    };
    let simple = |set: std::collections::BTreeSet<String>| -> std::collections::BTreeSet<String> {
        set.into_iter().map(|k| k.replace('-', "")).collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = got(&hook_a, "webhook-id").len() >= EVENTS
            && got(&hook_b, "webhook-id").len() >= EVENTS
            && got(&line, "x-line-retry-key").len() >= EVENTS;
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a {} b {} line {} of {EVENTS}",
            got(&hook_a, "webhook-id").len(),
            got(&hook_b, "webhook-id").len(),
            got(&line, "x-line-retry-key").len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        got(&hook_a, "webhook-id"),
        simple(expected("a")),
        "a: exactly the routed keys"
    );
    assert_eq!(got(&hook_b, "webhook-id"), simple(expected("b")));
    assert_eq!(got(&line, "x-line-retry-key"), expected("line"));
    let wire = hook_a.requests().len() + hook_b.requests().len() + line.requests().len();
    println!(
        "{kills} kills; {wire} requests on the wire for {} deliveries",
        3 * EVENTS
    );
}

/// A burst of 200 price changes on a route with a 1 s digest window reaches a Slack-like
/// receiver that allows 1 request per second (a faster one is answered 429) as a handful of
/// messages whose counts add up to 200, never faster than its limit; a webhook on the same
/// route gets the same digests with their `count`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_becomes_a_few_digests_within_the_rate() {
    let redis = RedisServer::start().unwrap();
    let last = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let seen = last.clone();
    let slack = Receiver::start(move |r, _| {
        let mut prev = seen.lock().unwrap();
        if prev.is_some_and(|p| r.at - p < Duration::from_millis(950)) {
            return Reply::Status(429, vec![("retry-after".into(), "1".into())], "rate_limited".into());
        }
        *prev = Some(r.at);
        Reply::Status(200, vec![], "ok".into())
    });
    let hook = Receiver::start(|_, _| Reply::ok("{}"));
    let (_dir, config) = config_file(&format!(
        r#"
[destinations.slack]
kind = "slack"
url = "{slack}/services/T/B/x"
[destinations.hook]
kind = "webhook"
url = "{hook}/hook"
secrets = ["{SECRET}"]
[routes.prices]
channels = ["pricing"]
types = ["PRICE_CHANGE"]
destinations = ["slack", "hook"]
digest_window_ms = 1000
"#,
        slack = slack.base(),
        hook = hook.base(),
    ));
    let (_svc, bus) = start_sinks(&redis, &config, &[]).await;
    let price = |i: usize| {
        let data = json!({"oldPrice": 100 + i, "newPrice": 101 + i, "currency": "USD"});
        (
            Channel::PRICING,
            NewEvent::new(
                EventType::PRICE_CHANGE,
                Payload::new(format!("lst_{i}"), Action::Updated).with_data(data),
            ),
        )
    };
    bus.publish_batch((0..200).map(price).collect()).await.unwrap();
    let counted = |texts: Vec<u64>| texts.iter().sum::<u64>();
    let slack_counts = || -> Vec<u64> {
        slack
            .requests()
            .iter()
            .filter(|r| r.json()["text"].is_string())
            .map(|r| {
                r.json()["text"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    until("the webhook's digests add up to 200", || {
        counted(
            hook.requests()
                .iter()
                .map(|r| r.json()["count"].as_u64().unwrap())
                .collect(),
        ) >= 200
    })
    .await;
    until("slack's digests add up to 200", || counted(slack_counts()) >= 200).await;
    // Every request the receiver saw (a 429 it gave would show as one closer than its limit).
    let requests = slack.requests();
    assert!(requests.len() <= 5, "a handful of messages, not {}", requests.len());
    assert_eq!(counted(slack_counts()), 200, "no event twice: {:?}", slack_counts());
    for pair in requests.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(950),
            "faster than 1 per second"
        );
    }
    let text = requests.last().unwrap().json()["text"].as_str().unwrap().to_owned();
    assert!(
        // Slack's text is escaped: `>` is `&gt;` (Slack shows `>`).
        text.contains("price changes (latest: Price lst_199: 299 → 300 USD)") || text.contains("price change (latest:"),
        "{text}"
    );
    assert_eq!(
        counted(
            hook.requests()
                .iter()
                .map(|r| r.json()["count"].as_u64().unwrap())
                .collect()
        ),
        200
    );
}

/// Stock-outs into a user's bell: a real gateway (its notifications in Redis) as the inbox
/// destination, with a service key. The user's list has the notification once, unread, and the
/// user's stream gets it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_outs_reach_the_users_bell_on_a_real_gateway() {
    const KEY: &str = "a-service-key-of-the-sinks-32-characters";
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let gw_vars = [
        ("REDIS_URL", url.as_str()),
        ("AUTH_MODE", "dev"),
        ("RAKUDA__AUTH__SERVICE_KEYS__SINKS", KEY),
        ("RUST_LOG", "warn"),
    ];
    let gw = Service::start(&testkit::process::workspace_bin("sse-gateway"), &env(&gw_vars)).unwrap();
    let token = testkit::process::dev_token(&gw.base(), "sub=ops&role=none").await;
    let mut bell = testkit::sse::SseStream::connect(
        &format!(
            "{}/api/realtime/events?channels=notifications&access_token={token}",
            gw.base()
        ),
        None,
    )
    .await
    .unwrap();
    let (_dir, config) = config_file(&format!(
        r#"
[destinations.ops-bell]
kind = "inbox"
url = "{gw}"
service_key = "env:TEST_SERVICE_KEY"
user_id = "ops"
[routes.stockouts]
channels = ["inventory"]
when = ["payload.data.isAvailable == false"]
destinations = ["ops-bell"]
"#,
        gw = gw.base(),
    ));
    let (sinks, bus) = start_sinks(&redis, &config, &[("TEST_SERVICE_KEY", KEY)]).await;
    bus.publish(&Channel::INVENTORY, stockout("prod_bell")).await.unwrap();
    // The stream's first message is the unread snapshot; then the notification, live.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no NOTIFICATION on the user's stream"
        );
        let m = bell.next_message(T).await.expect("a message");
        if m.data.contains("\"NOTIFICATION\"") && m.data.contains("prod_bell") {
            break;
        }
    }
    let page = testkit::process::get_json(&format!("{}/api/notifications", gw.base()), &token).await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["unread"], 1, "{page}");
    assert_eq!(page["notifications"][0]["type"], "warning");
    assert!(
        page["notifications"][0]["title"]
            .as_str()
            .unwrap()
            .contains("prod_bell"),
        "{page}"
    );
    drop(sinks);
}

/// The configuration the deployment ships (`deploy/k8s/base/sinks.toml`, which compose mounts
/// too) is one the service takes, with compose's override of the gateway's address.
#[test]
fn the_shipped_configuration_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s/base/sinks.toml");
    // Secrets are read from the process' environment when used (and checked).
    std::env::set_var("SINKS_SERVICE_KEY", "k");
    for extra in [None, Some(("RAKUDA__DESTINATIONS__BELL__URL", "http://gateway-1:8080"))] {
        let mut vars = env(&[("CONFIG_FILE", file.to_str().unwrap()), ("SINKS_SERVICE_KEY", "k")]);
        vars.extend(extra.map(|(k, v)| (k.to_owned(), v.to_owned())));
        let c: sinks::SinksConfig =
            service_kit::load_config(&sinks::SinksConfig::default(), sinks::ENV_ALIASES, &vars).unwrap();
        c.validate().unwrap();
        assert_eq!(c.routes["stockouts"].destinations, ["bell"]);
        if extra.is_some() {
            let sinks::config::DestinationConfig::Inbox { url, .. } = &c.destinations["bell"] else {
                panic!("an inbox")
            };
            assert_eq!(url, "http://gateway-1:8080");
        }
    }
}

/// Discord bans an IP after 10,000 invalid requests (401, 403, 429) in 10 minutes: a Discord
/// that answers every request 429 with a short `retry_after` gets `delivery.invalid_budget`
/// requests from the sinks, then none until the 10-minute window ends (the destination's
/// backoff is set to the window's end, for every replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_stays_clear_of_the_invalid_request_ban() {
    use fred::interfaces::KeysInterface;
    let redis = RedisServer::start().unwrap();
    let discord = Receiver::start(|_, _| {
        Reply::Status(
            429,
            vec![
                ("content-type".into(), "application/json".into()),
                ("x-ratelimit-scope".into(), "user".into()),
            ],
            r#"{"message": "You are being rate limited.", "retry_after": 0.05, "global": false}"#.into(),
        )
    });
    let (_dir, config) = config_file(&format!(
        r#"
[delivery]
invalid_budget = 3
max_attempts = 100
[destinations.discord]
kind = "discord"
url = "{}/api/webhooks/1/discord-secret"
[routes.orders]
channels = ["orders"]
destinations = ["discord"]
"#,
        discord.base()
    ));
    let (_svc, bus) = start_sinks(&redis, &config, &[]).await;
    bus.publish(&Channel::ORDERS, order("ord_ban")).await.unwrap();
    until("three 429s", || discord.requests().len() >= 3).await;
    let third = event_bus::Timestamp::now_ms();
    let window_end = (third / 600_000 + 1) * 600_000;
    let event_bus::AnyBus::Redis(b) = &bus else {
        panic!("a Redis bus")
    };
    let deadline = tokio::time::Instant::now() + T;
    let until_ms = loop {
        let v: Option<String> = b.client().get("rakuda:realtime:sinks:backoff:{discord}").await.unwrap();
        match v.and_then(|v| v.parse::<u64>().ok()) {
            Some(u) if u > third + 1_000 || u + 100 >= window_end => break u,
            _ => {
                assert!(tokio::time::Instant::now() < deadline, "no backoff to the window's end");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        until_ms + 100 >= window_end,
        "backing off until {until_ms}, the window ends at {window_end}"
    );
    assert_eq!(discord.requests().len(), 3, "no request past the budget");
}

/// Each provider's own retry hint, honoured: Discord's 429 body `retry_after` (float seconds),
/// LINE's and a webhook's `Retry-After` (seconds). The first request of each is answered 429
/// with its hint; the retry comes no sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_waits_for_its_providers_hint() {
    let redis = RedisServer::start().unwrap();
    let first_429 = |hint: Reply| Receiver::start(move |_, n| if n == 0 { hint.clone() } else { Reply::ok("{}") });
    let discord = first_429(Reply::Status(
        429,
        vec![("content-type".into(), "application/json".into())],
        r#"{"message": "You are being rate limited.", "retry_after": 1.25, "global": false}"#.into(),
    ));
    let line = first_429(Reply::Status(
        429,
        vec![("retry-after".into(), "1".into())],
        "{}".into(),
    ));
    let hook = first_429(Reply::Status(429, vec![("retry-after".into(), "1".into())], "".into()));
    let (_dir, config) = config_file(&format!(
        r#"
[delivery]
backoff_initial_ms = 10
[destinations.discord]
kind = "discord"
url = "{discord}/api/webhooks/1/x"
[destinations.line]
kind = "line"
token = "t"
to = "U1"
url = "{line}/v2/bot/message/push"
[destinations.hook]
kind = "webhook"
url = "{hook}/hook"
secrets = ["{SECRET}"]
[routes.orders]
channels = ["orders"]
destinations = ["discord", "line", "hook"]
"#,
        discord = discord.base(),
        line = line.base(),
        hook = hook.base(),
    ));
    let (_svc, bus) = start_sinks(&redis, &config, &[]).await;
    bus.publish(&Channel::ORDERS, order("ord_hint")).await.unwrap();
    for (name, r, hint_ms) in [
        ("discord", &discord, 1250),
        ("line", &line, 1000),
        ("hook", &hook, 1000),
    ] {
        until(&format!("{name}'s retry"), || r.requests().len() >= 2).await;
        let q = r.requests();
        let waited = q[1].at.duration_since(q[0].at);
        assert!(
            waited >= Duration::from_millis(hint_ms - 10),
            "{name}: retried after {waited:?}, the hint was {hint_ms} ms"
        );
        assert_eq!(q.len(), 2, "{name}: one retry, taken");
    }
}

/// A destination disabled (its webhook answers 401) keeps a bounded outbox: past
/// `delivery.max_backlog`, the oldest deliveries go to the dead letters as new ones are queued
/// (counted by `sinks_outbox_overflow_total`), where an operator can still list and replay them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_destination_keeps_a_bounded_outbox() {
    let redis = RedisServer::start().unwrap();
    let hook = Receiver::start(|_, _| Reply::Status(401, vec![], "who are you".into()));
    let (_dir, config) = config_file(&format!(
        r#"
[delivery]
max_backlog = 10
[destinations.hook]
kind = "webhook"
url = "{}/hook"
secrets = ["{SECRET}"]
[routes.orders]
channels = ["orders"]
destinations = ["hook"]
"#,
        hook.base()
    ));
    let (svc, bus) = start_sinks(&redis, &config, &[]).await;
    bus.publish(&Channel::ORDERS, order("ord_0")).await.unwrap();
    until_metric(&svc, "sinks_disabled{destination=\"hook\"}", 1.0).await;
    for i in 1..25 {
        bus.publish(&Channel::ORDERS, order(&format!("ord_{i}"))).await.unwrap();
    }
    until_metric(&svc, "sinks_queued_total{destination=\"hook\"}", 25.0).await;
    until_metric(&svc, "sinks_outbox_overflow_total{destination=\"hook\"}", 15.0).await;
    let len = |key: &str| -> u64 { redis.cli(&["XLEN", key]).unwrap().trim().parse().unwrap() };
    assert_eq!(
        len("rakuda:realtime:sinks:outbox:{hook}"),
        10,
        "the outbox holds max_backlog"
    );
    assert_eq!(
        len("rakuda:realtime:sinks:dead:{hook}"),
        15,
        "the rest are dead letters"
    );
    let why = redis
        .cli(&["XRANGE", "rakuda:realtime:sinks:dead:{hook}", "-", "+", "COUNT", "1"])
        .unwrap();
    assert!(why.contains("max_backlog") && why.contains("ord_0"), "{why}");
    assert_eq!(hook.requests().len(), 1, "nothing more was sent while disabled");
}
