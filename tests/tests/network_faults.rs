//! Delivery through network faults: the short versions of `make soak`'s cases a. and b.
//! (`docs/reference.md`, "Network faults"). A real redis-server and a real `sse-gateway`
//! process, with testkit's fault proxy on each link: resuming SSE clients reach the gateway
//! through one, the gateway reaches Redis through another. A worker publishes on the bus
//! (straight to Redis, as workers do) at 200 events/s while a link is cut for 2 s, and again
//! for 1 s ending in a reset of its connections; every client must get every event once, in
//! order.

use std::{net::SocketAddr, time::Duration};

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload};
use testkit::{
    faults::FaultProxy,
    process::{env, workspace_bin, Service},
    RedisServer,
};

const CLIENTS: usize = 50;
const RATE: u64 = 200;
const EVENTS: usize = 1_000;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Redis, the gateway behind `to_redis`, and the proxy clients reach it through.
struct Links {
    _redis: RedisServer,
    to_redis: FaultProxy,
    gateway: Service,
    to_gateway: FaultProxy,
    bus: event_bus::AnyBus,
}

async fn links() -> Links {
    let redis = RedisServer::start().unwrap();
    let to_redis = FaultProxy::start(loopback(redis.port()));
    let url = format!("redis://127.0.0.1:{}", to_redis.port());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("AUTH_MODE", "none"),
        ("INSTANCE_ID", "faults-gw"),
        ("RUST_LOG", "warn"),
    ];
    let gateway = Service::start(&workspace_bin("sse-gateway"), &env(&vars)).unwrap();
    assert!(
        testkit::wait_until(Duration::from_secs(20), || async {
            testkit::http_status(gateway.port, "/readyz") == Some(200)
        })
        .await,
        "the gateway is not ready"
    );
    let to_gateway = FaultProxy::start(loopback(gateway.port));
    let bus = event_bus::connect(BusConfig {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await
    .unwrap();
    Links {
        _redis: redis,
        to_redis,
        gateway,
        to_gateway,
        bus,
    }
}

/// `CLIENTS` resuming clients through `to_gateway`, `EVENTS` events published at `RATE`
/// while `fault` cuts a link for 2 s, then for 1 s ended by a reset of its connections; each
/// client's payload ids and reconnects.
async fn run(l: &Links, fault: &FaultProxy) -> Vec<(Vec<String>, usize)> {
    let base = format!("http://127.0.0.1:{}", l.to_gateway.port());
    let mut ready = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (tx, rx) = tokio::sync::watch::channel(false);
        ready.push(rx);
        let bases = vec![base.clone()];
        clients.push(tokio::spawn(async move {
            testkit::sse::follow(&bases, 0, "/api/realtime/events?channels=orders", EVENTS, Some(tx)).await
        }));
    }
    for mut r in ready {
        r.wait_for(|open| *open).await.unwrap();
    }
    assert!(
        l.to_gateway.connections() >= CLIENTS,
        "the clients' streams do not pass the proxy"
    );
    let publish = async {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        for i in 0..EVENTS {
            tick.tick().await;
            let event = NewEvent::new(
                EventType::ORDER_RECEIVED,
                Payload::new(format!("ord_{i}"), Action::Created),
            );
            l.bus.publish(&Channel::ORDERS, event).await.unwrap();
        }
    };
    let cut = async {
        // A cut the connections outlive: the bytes wait and flow on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        fault.down(true);
        tokio::time::sleep(Duration::from_secs(2)).await;
        fault.down(false);
        // A cut they do not: every connection on the link is reset as it heals, so clients
        // (or the gateway's Redis connections) reconnect and resume.
        tokio::time::sleep(Duration::from_millis(500)).await;
        fault.down(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        fault.reset();
        fault.down(false);
    };
    tokio::join!(publish, cut);
    let mut seen = Vec::new();
    for c in clients {
        seen.push(c.await.unwrap());
    }
    seen
}

fn assert_every_event_once(seen: &[(Vec<String>, usize)], case: &str) {
    let reconnects: usize = seen.iter().map(|(_, r)| r).sum();
    eprintln!("{case}: {} clients, {reconnects} reconnects in all", seen.len());
    let want: Vec<String> = (0..EVENTS).map(|i| format!("ord_{i}")).collect();
    for (i, (ids, _)) in seen.iter().enumerate() {
        assert_eq!(ids.len(), EVENTS, "{case}: client {i} got {} events", ids.len());
        let first_wrong = ids.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(
            first_wrong, None,
            "{case}: client {i} lost, repeated or reordered an event"
        );
    }
}

/// a. The link between the clients and the gateway is cut for 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_through_a_cut_between_clients_and_gateway() {
    let l = links().await;
    let seen = run(&l, &l.to_gateway).await;
    assert_every_event_once(&seen, "clients-gateway");
    let reconnects: usize = seen.iter().map(|(_, r)| r).sum();
    assert!(
        reconnects >= CLIENTS,
        "the reset did not end the clients' streams ({reconnects} reconnects)"
    );
}

/// b. The link between the gateway and Redis is cut for 2 s: the gateway's subscription and
/// its commands stall; events published meanwhile reach the clients once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_through_a_cut_between_gateway_and_redis() {
    let l = links().await;
    let seen = run(&l, &l.to_redis).await;
    assert_every_event_once(&seen, "gateway-redis");
    assert!(
        testkit::http_status(l.gateway.port, "/readyz") == Some(200),
        "the gateway did not recover its upstream"
    );
}
