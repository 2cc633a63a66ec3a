//! The real npm `eventsource` package (the browser's EventSource for Node) against the gateway,
//! in both client styles the dashboards use, and reconnecting by itself with Last-Event-ID.

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use common::Gateway;
use event_bus::{Action, Broker, BusConfig, Channel, ChannelSpec, EventType, NewEvent, Payload, RedisBus};
use serde_json::Value;
use testkit::{process::Service, RedisServer};

/// `node sse-client.mjs ...`, killed when dropped; its JSON lines are read as they come.
struct NodeClient(testkit::node::NodeScript);

impl NodeClient {
    fn start(args: &[&str]) -> NodeClient {
        NodeClient(testkit::node::NodeScript::start("sse-client.mjs", args, &[]))
    }

    fn next(&self) -> Value {
        self.0
            .next(Duration::from_secs(30))
            .expect("node client printed nothing within 30 s")
    }

    /// The next line that is not an open/error notice.
    fn next_event(&self) -> Value {
        loop {
            let v = self.next();
            if v.get("open").is_none() && v.get("error").is_none() {
                return v;
            }
        }
    }

    fn wait_open(&self) {
        while self.next().get("open").is_none() {}
    }
}

/// The Phase 27 React hook: onmessage, JSON.parse, switch on type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase27_onmessage_hook_gets_every_event() {
    let gw = Gateway::start(|_| {}).await;
    let node = NodeClient::start(&[&format!("{}/api/realtime/events", gw.base), "onmessage", "3"]);
    tokio::task::block_in_place(|| node.wait_open());
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "ord_1").await;
    gw.publish(&Channel::INVENTORY, EventType::INVENTORY_CHANGE, "prod_1")
        .await;
    gw.publish(&Channel::PRICING, EventType::PRICE_CHANGE, "lst_1").await;
    let mut got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let v = tokio::task::block_in_place(|| node.next_event());
            assert_eq!(v["via"], "onmessage");
            assert!(
                v["lastEventId"]
                    .as_str()
                    .is_some_and(|id| id.parse::<event_bus::Cursor>().is_ok()),
                "{v}"
            );
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["ids"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("inventory".into(), "prod_1".into()),
            ("order".into(), "ord_1".into()),
            ("price".into(), "lst_1".into())
        ]
    );
}

/// The task-board hook: named=true and addEventListener per type; onmessage gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_board_named_listeners_get_their_types() {
    let gw = Gateway::start(|c| {
        c.bus.channels.push(ChannelSpec {
            name: Channel::new("tasks").unwrap(),
            types: ["task_created", "session_update", "log_created", "system_update"]
                .iter()
                .map(|t| EventType::new(*t).unwrap())
                .collect(),
            partitions: 1,
        })
    })
    .await;
    let url = format!("{}/api/realtime/events?channels=tasks&named=true", gw.base);
    let node = NodeClient::start(&[&url, "named", "2", "task_created,session_update"]);
    tokio::task::block_in_place(|| node.wait_open());
    let tasks = Channel::new("tasks").unwrap();
    gw.publish(&tasks, EventType::new("task_created").unwrap(), "t1").await;
    gw.publish(&tasks, EventType::new("log_created").unwrap(), "l1").await; // nobody listens
    gw.publish(&tasks, EventType::new("session_update").unwrap(), "s1")
        .await;
    let a = tokio::task::block_in_place(|| node.next_event());
    let b = tokio::task::block_in_place(|| node.next_event());
    assert_eq!(
        (a["via"].as_str(), a["ids"][0].as_str()),
        (Some("task_created"), Some("t1")),
        "{a}"
    );
    assert_eq!(
        (b["via"].as_str(), b["ids"][0].as_str()),
        (Some("session_update"), Some("s1")),
        "{b}"
    );
}

/// kill -9 of the gateway; events published while it is down; a new gateway on the same
/// address. EventSource reconnects by itself with Last-Event-ID and gets every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_resumes_across_a_gateway_restart() {
    const N: usize = 20;
    let redis = RedisServer::start().unwrap();
    let env: HashMap<String, String> = [
        ("REDIS_URL", redis.url()),
        ("SSE_DEBOUNCE_WINDOW", "0".into()),
        ("RAKUDA__RETRY_MS", "200".into()),
        ("RAKUDA__DRAIN_RETRY_SPREAD_MS", "100".into()),
        ("AUTH_MODE", "none".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_sse-gateway"));
    let mut gw = Service::start(bin, &env).unwrap();
    let port = gw.port;
    let url = format!("{}/api/realtime/events?channels=orders", gw.base());
    let node = NodeClient::start(&[&url, "onmessage", &N.to_string()]);
    tokio::task::block_in_place(|| node.wait_open());
    let bus = RedisBus::connect(BusConfig {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let publish = |i: usize| {
        let bus = bus.clone();
        async move {
            bus.publish(
                &Channel::ORDERS,
                NewEvent::new(EventType::ORDER_RECEIVED, Payload::new(i.to_string(), Action::Created)),
            )
            .await
            .unwrap();
        }
    };
    let mut got = Vec::new();
    for i in 0..N / 2 {
        publish(i).await;
        got.push(
            tokio::task::block_in_place(|| node.next_event())["ids"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    gw.kill9();
    for i in N / 2..N {
        publish(i).await;
    }
    let _gw2 = tokio::task::block_in_place(|| Service::start_on(bin, &env, port)).unwrap();
    while got.len() < N {
        let v = tokio::task::block_in_place(|| node.next_event());
        got.extend(
            v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(got, (0..N).map(|i| i.to_string()).collect::<Vec<_>>());
}
