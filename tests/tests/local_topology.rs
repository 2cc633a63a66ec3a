//! `make up`'s topology (deploy/local/up.sh: redis-server, two gateways behind Debian's nginx
//! with the compose file's SSE settings, worker-emitter, stats-aggregator, sinks) as an operator
//! runs it: a rolling restart of the gateway a client is on, through nginx, loses no event,
//! repeats none, and costs the client exactly one reconnect; a stock-out reaches the `ops` user's
//! bell through the sinks; `down` stops every process it started.

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
