//! Shared harness of the gateway tests: a gateway on 127.0.0.1:0 with the in-process bus.
#![allow(dead_code)] // each test file uses part of it

use std::time::Duration;

use event_bus::{Action, AnyBus, Broker, BusConfig, Channel, Envelope, EventType, MemoryBus, NewEvent, Payload};
use serde_json::Value;
use sse_gateway::GatewayConfig;
use testkit::sse::{Item, Message, SseStream};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub const T: Duration = Duration::from_secs(10);

pub struct Gateway {
    pub base: String,
    pub bus: AnyBus,
    pub shutdown: CancellationToken,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    pub async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Gateway {
        let mut config = GatewayConfig {
            instance_id: "test-gw".into(),
            // One message per event unless a test is about grouping.
            debounce_window_ms: 0,
            bus: BusConfig {
                memory_capacity: 100_000,
                ..Default::default()
            },
            ..Default::default()
        };
        // Open, as `make run`; the authentication tests set their own keys.
        config.auth.mode = sse_gateway::auth::AuthMode::None;
        tweak(&mut config);
        config.validate().unwrap();
        let bus = AnyBus::Memory(MemoryBus::new(config.bus_config()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(sse_gateway::serve(listener, config, bus.clone(), shutdown.clone()));
        Gateway {
            base,
            bus,
            shutdown,
            server: Some(server),
        }
    }

    pub async fn stream(&self, query: &str, last_event_id: Option<&str>) -> SseStream {
        let s = SseStream::connect(&format!("{}/api/realtime/events{query}", self.base), last_event_id)
            .await
            .unwrap();
        s
    }

    /// Opens a stream and reads its opening (`retry:` and the first comment).
    pub async fn open(&self, query: &str, last_event_id: Option<&str>) -> SseStream {
        let mut s = self.stream(query, last_event_id).await;
        assert_eq!(s.status, 200, "{query}");
        assert!(matches!(s.next_item(T).await, Some(Item::Retry(_))));
        assert!(matches!(s.next_item(T).await, Some(Item::Comment(c)) if c.starts_with("connected")));
        s
    }

    pub async fn publish(&self, channel: &Channel, ty: EventType, id: &str) -> event_bus::EventId {
        self.bus
            .publish(channel, NewEvent::new(ty, Payload::new(id, Action::Updated)))
            .await
            .unwrap()
            .id
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn envelope(m: &Message) -> Envelope {
    serde_json::from_str(&m.data).unwrap_or_else(|e| panic!("not an envelope: {}: {e}", m.data))
}

pub async fn next_env(s: &mut SseStream) -> (Message, Envelope) {
    let m = s.next_message(T).await.expect("stream ended");
    let e = envelope(&m);
    (m, e)
}
