//! `make up`'s topology (deploy/local/up.sh: redis-server, two gateways behind Debian's nginx
//! with the compose file's SSE settings, worker-emitter, stats-aggregator, sinks) as an operator
//! runs it: a rolling restart of the gateway a client is on, through nginx, loses no event,
//! repeats none, and costs the client exactly one reconnect; a stock-out reaches the `ops` user's
//! bell through the sinks; `down` stops every process it started. Two operators' browsers on the
//! two gateways see who is online, and who acknowledged a stock-out; LINE hears only of the one
//! no one acknowledged, once, through a kill -9 of the sinks.

use std::{path::PathBuf, process::Command, time::Duration};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus};
use testkit::free_port;

struct Topology {
    env: Vec<(String, String)>,
    nginx: u16,
    gateways: [u16; 2],
    redis: u16,
    _dir: tempfile::TempDir,
}

impl Topology {
    fn up() -> Topology {
        Topology::up_with(&[])
    }

    /// [`Topology::up`] with more settings (`UP_SINKS_CONFIG`, variables for the services).
    fn up_with(extra: &[(&str, String)]) -> Topology {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..7).map(|_| free_port(false)).collect();
        let bin = testkit::process::workspace_bin("sse-gateway")
            .parent()
            .unwrap()
            .to_owned();
        let env: Vec<(String, String)> = [
            ("UP_DIR", dir.path().display().to_string()),
            ("UP_BIN_DIR", bin.display().to_string()),
            ("UP_NGINX_PORT", ports[0].to_string()),
            ("UP_GW1_PORT", ports[1].to_string()),
            ("UP_GW2_PORT", ports[2].to_string()),
            ("UP_WORKER_PORT", ports[3].to_string()),
            ("UP_AGG_PORT", ports[4].to_string()),
            ("UP_REDIS_PORT", ports[5].to_string()),
            ("UP_SINKS_PORT", ports[6].to_string()),
            ("RUST_LOG", "warn".into()),
            // A drained client comes back at once (the spread is for thousands of them).
            ("UP_GATEWAY_RAKUDA__DRAIN_RETRY_SPREAD_MS", "200".into()),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let t = Topology {
            env,
            nginx: ports[0],
            gateways: [ports[1], ports[2]],
            redis: ports[5],
            _dir: dir,
        };
        t.run(&["up"]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/up.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "up.sh {args:?}:\n{text}");
        text
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/up.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("down")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

async fn connections(port: u16) -> u64 {
    let v: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/realtime/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["connections"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_nginx_loses_nothing() {
    let topo = tokio::task::block_in_place(Topology::up);
    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(format!("redis://127.0.0.1:{}", topo.redis)),
        ..Default::default()
    })
    .await
    .unwrap();
    const N: usize = 300;

    // A client like EventSource: through nginx, reconnecting with Last-Event-ID.
    let base = vec![format!("http://127.0.0.1:{}", topo.nginx)];
    let client =
        tokio::spawn(
            async move { testkit::sse::follow(&base, 0, "/api/realtime/events?channels=orders", N, None).await },
        );

    // Which gateway nginx gave the client to.
    let mut on = None;
    for _ in 0..500 {
        let counts = [connections(topo.gateways[0]).await, connections(topo.gateways[1]).await];
        if counts.iter().sum::<u64>() == 1 {
            on = Some(if counts[0] == 1 { "gateway-1" } else { "gateway-2" });
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on = on.expect("the client connected through nginx");

    // Events flow at 100/s (pacing a load, not synchronising); a third of the way in, the
    // client's gateway gets SIGTERM, drains, and is started again.
    let restart = {
        let env = topo.env.clone();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/up.sh");
        move || {
            let out = Command::new("bash")
                .arg(script)
                .args(["restart", on])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let mut restarter = None;
    let start = tokio::time::Instant::now();
    for i in 0..N {
        tokio::time::sleep_until(start + Duration::from_millis(10) * i as u32).await;
        let e = NewEvent::new(EventType::ORDER_RECEIVED, Payload::new(i.to_string(), Action::Created));
        bus.publish(&Channel::ORDERS, e).await.unwrap();
        if i == N / 3 {
            restarter = Some(tokio::task::spawn_blocking(restart.clone()));
        }
    }
    restarter.unwrap().await.unwrap();
    let (got, reconnects) = tokio::time::timeout(Duration::from_secs(90), client)
        .await
        .unwrap()
        .unwrap();
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every event once, in order");
    assert_eq!(reconnects, 1, "the client saw one reconnect");

    // The sinks: a stock-out into the ops user's bell (deploy/k8s/base/sinks.toml), through
    // the gateway's notifications API with the topology's service key.
    let stockout = NewEvent::new(
        EventType::INVENTORY_CHANGE,
        Payload::new("prod_up", Action::Updated)
            .with_data(serde_json::json!({"isAvailable": false, "price": 5, "currency": "USD"})),
    );
    bus.publish(&Channel::INVENTORY, stockout).await.unwrap();
    let bell = "rakuda:realtime:user:{ops}:notifications";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        use fred::interfaces::HashesInterface;
        let n: u64 = bus.client().hlen(bell).await.unwrap();
        if n == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stock-out is not in the ops bell"
        );
        // Polling Redis: the notification has no event this test can await without a token.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // down stops exactly what up started.
    let status = topo.run(&["down"]);
    assert!(status.contains("down"), "{status}");
    let status = topo.run(&["status"]);
    assert_eq!(status.matches("stopped").count(), 7, "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", topo.nginx)).is_err(),
        "nginx still listens"
    );
}

/// The sinks' configuration of the escalation test: the bell as deployed, and LINE (a stand-in at
/// `line`) for stock-outs no one acknowledged within 3 s.
fn escalating_sinks(line: &str) -> String {
    format!(
        r#"
[delivery]
lease_ttl_ms = 1500
timeout_ms = 500

[destinations.bell]
kind = "inbox"
url = "http://sse-gateway:80"
service_key = "env:SINKS_SERVICE_KEY"
user_id = "ops"

[destinations.line]
kind = "line"
token = "env:UP_TEST_LINE_TOKEN"
to = "Uops"
url = "{line}/v2/bot/message/push"

[routes.unacknowledged]
channels = ["inventory"]
types = ["INVENTORY_CHANGE"]
when = ["payload.data.isAvailable == false"]
destinations = ["line"]
template = "Out of stock: {{payload.id}}"
escalate_after_ms = 3000
unless = "acknowledged"
"#
    )
}

/// The escalations the dashboard lists, through nginx (`AUTH_MODE=none`: the caller is admin).
async fn escalations(base: &str) -> serde_json::Value {
    let v: serde_json::Value = reqwest::get(format!("{base}/api/sinks/destinations"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["escalations"].clone()
}

/// Waits (bounded) until the dashboard's escalations satisfy `cond`; them.
async fn escalations_until(base: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = escalations(base).await;
        if cond(&e) {
            return e;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {e}");
        // Polling the panel as the dashboard does: the sinks' decisions have no event to await.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(list: &serde_json::Value, key: &str, value: &str) -> Option<serde_json::Value> {
    list.as_array()?.iter().find(|e| e[key] == value).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dashboards_acknowledge_and_line_hears_only_what_no_one_acted_on() {
    use testkit::receiver::{Receiver, Reply};
    let line = Receiver::start(|_, _| Reply::ok(r#"{"sentMessages": [{"id": "1"}]}"#));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sinks.toml");
    std::fs::write(&config, escalating_sinks(&line.base())).unwrap();
    let topo = tokio::task::block_in_place(|| {
        Topology::up_with(&[
            ("UP_SINKS_CONFIG", config.display().to_string()),
            ("UP_TEST_LINE_TOKEN", "line-token".into()),
        ])
    });
    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(format!("redis://127.0.0.1:{}", topo.redis)),
        ..Default::default()
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", topo.nginx);
    let shots = std::env::temp_dir().join("rakuda-two-dashboards");
    let mut b = testkit::node::NodeScript::start("two-dashboards-test.mjs", &[&base, shots.to_str().unwrap()], &[]);
    let t = Duration::from_secs(30);

    // Both live, one on each gateway (nginx gives a new stream to the one with fewer), and each
    // shows who is online: both are the user `dev` of AUTH_MODE=none.
    let mut tries = 0;
    loop {
        let live = tokio::task::block_in_place(|| b.next(t)).expect("both dashboards live");
        assert_eq!(live["phase"], "live", "{live}");
        assert_eq!(
            live["operators"],
            serde_json::json!(["1 operator online", "1 operator online"]),
            "{live}"
        );
        // A reloaded page's old stream is gone once its gateway writes to it (a heartbeat).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        let on = loop {
            let on = [connections(topo.gateways[0]).await, connections(topo.gateways[1]).await];
            if on[0] + on[1] == 2 || tokio::time::Instant::now() > deadline {
                break on;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if on == [1, 1] {
            break;
        }
        // A request of the first page was in flight on the other gateway as the second
        // stream came: nginx's least_conn saw a tie. The second page loads again.
        tries += 1;
        assert!(tries < 5, "the two browsers never landed on the two gateways: {on:?}");
        b.send("reload b");
    }

    let stockout = |id: &str| {
        NewEvent::new(
            EventType::INVENTORY_CHANGE,
            Payload::new(id, Action::Updated)
                .with_data(serde_json::json!({"isAvailable": false, "price": 5, "currency": "USD"})),
        )
    };
    // A: acknowledged in one browser within the window; both show who acknowledged it.
    let a = bus
        .publish(&Channel::INVENTORY, stockout("prod_acked"))
        .await
        .unwrap()
        .id;
    b.send("alert prod_acked");
    let acked = tokio::task::block_in_place(|| b.next(t)).expect("acknowledged");
    assert_eq!(
        acked["acked"],
        serde_json::json!(["acknowledged by dev", "acknowledged by dev"]),
        "{acked}"
    );
    // B: no one acknowledges it.
    let b_id = bus
        .publish(&Channel::INVENTORY, stockout("prod_nobody"))
        .await
        .unwrap()
        .id;
    b.send("alert prod_nobody");
    let seen = tokio::task::block_in_place(|| b.next(t)).expect("seen");
    assert_eq!(seen["unacked"], serde_json::json!([null, null]), "{seen}");

    // While B waits, the sinks are killed with SIGKILL and started again.
    escalations_until(&base, "B waiting", |e| {
        has(&e["waiting"], "event_id", &b_id.to_string()).is_some()
    })
    .await;
    let up_dir = &topo.env.iter().find(|(k, _)| k == "UP_DIR").unwrap().1;
    let pid = std::fs::read_to_string(format!("{up_dir}/pids/sinks.pid")).unwrap();
    let killed = Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
    assert!(killed.success());
    topo.run(&["start", "sinks"]);

    // A was suppressed, by dev; B was sent, after its window, exactly once; A never was.
    let e = escalations_until(&base, "both decided", |e| {
        has(&e["decided"], "event_id", &a.to_string()).is_some()
            && has(&e["decided"], "event_id", &b_id.to_string()).is_some()
    })
    .await;
    let da = has(&e["decided"], "event_id", &a.to_string()).unwrap();
    assert_eq!(
        (da["decision"].as_str(), da["by"].as_str()),
        (Some("suppressed"), Some("dev")),
        "{da}"
    );
    let db = has(&e["decided"], "event_id", &b_id.to_string()).unwrap();
    assert_eq!(db["decision"], "sent", "{db}");
    let texts = || -> Vec<String> {
        line.requests()
            .iter()
            .map(|r| r.json()["messages"][0]["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !texts().iter().any(|t| t.contains("prod_nobody")) {
        assert!(tokio::time::Instant::now() < deadline, "B never reached LINE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A later one, no one acknowledging: once it is on LINE, B was not sent again meanwhile.
    bus.publish(&Channel::INVENTORY, stockout("prod_later")).await.unwrap();
    while !texts().iter().any(|t| t.contains("prod_later")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the later one never reached LINE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = texts();
    assert_eq!(all.iter().filter(|t| t.contains("prod_nobody")).count(), 1, "{all:?}");
    assert_eq!(all.iter().filter(|t| t.contains("prod_acked")).count(), 0, "{all:?}");

    b.send("done");
    let done = tokio::task::block_in_place(|| b.finish(t));
    assert_eq!(done["consoleErrors"], serde_json::json!([]), "{done}");
    assert_eq!(done["failed"], serde_json::json!([]), "{done}");
}
