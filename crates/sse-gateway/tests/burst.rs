//! Bursts with no casualties (issue 34): 200 streams on the memory bus with the shipped
//! configuration (grouping on, the default connection queue), and a burst of 20,000 events
//! published at once, far faster than the queues take: every stream gets all of them, in
//! order, once, on the connection it opened; none is cut. Streams whose queue filled read what
//! they missed from the store in place.
//!
//! Raw sockets, and the payload ids found by a byte search, not a JSON parser per event: 4
//! million deliveries are read in a debug build.

mod common;

use common::{Gateway, T};
use event_bus::{Action, Broker, Channel, EventType, NewEvent, Payload};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const STREAMS: usize = 200;
const EVENTS: usize = 20_000;
/// How each payload id starts (the envelope ids are `<ms>-<seq>`).
const MARK: &[u8] = b"\"id\":\"k";

/// Reads one stream until it has `EVENTS` payload ids; their numbers, in arrival order. Fails
/// if the stream ends or says it was cut.
async fn read_all(mut sock: TcpStream) -> Vec<u32> {
    let mut ids = Vec::with_capacity(EVENTS);
    let mut buf = vec![0u8; 256 * 1024];
    // The unscanned tail of what was read: a mark may straddle two reads.
    let mut carry: Vec<u8> = Vec::new();
    while ids.len() < EVENTS {
        let Ok(n) = tokio::time::timeout(T * 6, sock.read(&mut buf)).await else {
            panic!(
                "the stream went silent after {} events (last {:?})",
                ids.len(),
                ids.last()
            );
        };
        let n = n.expect("read");
        assert!(n > 0, "the stream ended after {} events", ids.len());
        carry.extend_from_slice(&buf[..n]);
        assert!(
            !carry.windows(8).any(|w| w == b"too slow"),
            "the stream was cut after {} events",
            ids.len()
        );
        let mut i = 0;
        let mut done = 0;
        while i + MARK.len() < carry.len() {
            if carry[i] == b'"' && carry[i..].starts_with(MARK) {
                let start = i + MARK.len();
                let Some(end) = carry[start..].iter().position(|b| *b == b'"') else {
                    break;
                };
                let digits = std::str::from_utf8(&carry[start..start + end]).unwrap();
                ids.push(digits.parse().unwrap());
                i = start + end;
                done = i;
            } else {
                i += 1;
            }
        }
        // Keep what may hold the start of a mark.
        let keep = done.max(carry.len().saturating_sub(MARK.len() + 12));
        carry.drain(..keep);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_get_a_20k_burst_whole_and_none_is_cut() {
    let shipped = sse_gateway::GatewayConfig::default();
    let gw = Gateway::start(|c| {
        // The shipped settings of what a burst meets: grouping, the queue, the store's size.
        c.debounce_window_ms = shipped.debounce_window_ms;
        c.connection_queue = shipped.connection_queue;
        c.bus.memory_capacity = shipped.bus.memory_capacity;
        // Every stream comes from 127.0.0.1: the per-client limit would count them as one.
        c.max_connections_per_client = STREAMS;
    })
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut readers = Vec::new();
    for _ in 0..STREAMS {
        let mut sock = TcpStream::connect(&addr).await.unwrap();
        sock.write_all(b"GET /api/realtime/events?channels=orders HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        // Open (its first bytes came) before the burst.
        let mut first = [0u8; 512];
        let n = tokio::time::timeout(T, sock.read(&mut first)).await.unwrap().unwrap();
        assert!(
            first[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&first[..n])
        );
        readers.push(tokio::spawn(read_all(sock)));
    }
    let batch: Vec<(Channel, NewEvent)> = (0..EVENTS)
        .map(|i| {
            (
                Channel::ORDERS,
                NewEvent::new(
                    EventType::ORDER_RECEIVED,
                    Payload::new(format!("k{i}"), Action::Created),
                ),
            )
        })
        .collect();
    for chunk in batch.chunks(1_000) {
        gw.bus.publish_batch(chunk.to_vec()).await.unwrap();
    }
    let want: Vec<u32> = (0..EVENTS as u32).collect();
    for r in readers {
        // 4 million deliveries, most of them caught up from the store, in a debug build.
        let got = tokio::time::timeout(T * 30, r)
            .await
            .expect("a stream never finished")
            .unwrap();
        assert!(got == want, "lost, repeated or reordered: {} ids", got.len());
    }
    let (_, m) = gw.get("/metrics").await;
    assert!(
        m.contains("realtime_slow_consumer_disconnects_total{instance=\"test-gw\"} 0"),
        "{m}"
    );
}
