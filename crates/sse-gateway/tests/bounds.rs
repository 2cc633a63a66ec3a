//! Every connection has a bounded life: a client that stops reading is closed (lean streams,
//! hyper connections, WebSockets), a stream the hub cut closes at once, sockets that never
//! send a request are capped and timed out, request heads and bodies have limits and
//! deadlines, a WebSocket session ends with its token and without a stream, and browser
//! requests from a foreign `Origin` are refused. Real sockets against a gateway on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{Gateway, T};
use event_bus::{Action, Broker, Channel, EventType, NewEvent, Payload};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

/// A connection whose receive window stays small, so a client that does not read fills the
/// server's side quickly.
async fn tight(base: &str) -> TcpStream {
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(addr).await.unwrap()
}

async fn metric(gw: &Gateway, line: &str) -> bool {
    gw.get("/metrics").await.1.lines().any(|l| l == line)
}

fn sse_active(n: usize) -> String {
    format!("realtime_connections_active{{transport=\"sse\",instance=\"test-gw\"}} {n}")
}

fn closed(reason: &str, n: usize) -> String {
    format!("realtime_connections_closed_total{{reason=\"{reason}\",instance=\"test-gw\"}} {n}")
}

/// Publishes `n` events of about 2 KB each on `channel`, each about another entity.
async fn flood(gw: &Gateway, channel: &Channel, ty: EventType, n: usize) {
    let pad = "x".repeat(2_000);
    for i in 0..n {
        let e = NewEvent::new(
            ty.clone(),
            Payload::new(format!("{i}"), Action::Created).with_data(json!({"pad": pad})),
        );
        gw.bus.publish(channel, e).await.unwrap();
    }
}

/// A stream of `channel` whose client reads nothing, after about 40 MB of events were
/// published: far more than the socket buffers of both sides hold.
async fn stalled_stream(gw: &Gateway, channel: &Channel, ty: EventType) -> TcpStream {
    let mut sock = tight(&gw.base).await;
    let request = format!("GET /api/realtime/events?channels={channel} HTTP/1.1\r\nhost: t\r\n\r\n");
    sock.write_all(request.as_bytes()).await.unwrap();
    assert!(testkit::wait_until(T, || async { metric(gw, &sse_active(1)).await }).await);
    flood(gw, channel, ty, 20_000).await;
    sock
}

/// Reads what is there until the server closes; None if it stays open past `limit`.
async fn read_to_close(sock: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 65536];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().map(|_| got)
}

/// A stream of `channel` whose client reads nothing is closed, and counted by `counted` (a
/// metrics line); what the client had been sent.
async fn stalled_stream_is_closed(
    (channel, ty): (Channel, EventType),
    tweak: impl FnOnce(&mut sse_gateway::GatewayConfig),
    counted: &str,
) -> Vec<u8> {
    let gw = Gateway::start(tweak).await;
    let mut sock = stalled_stream(&gw, &channel, ty).await;
    assert!(
        testkit::wait_until(T, || async { metric(&gw, &sse_active(0)).await }).await,
        "the stalled stream still holds its socket"
    );
    assert!(metric(&gw, counted).await, "{counted}");
    read_to_close(&mut sock, T).await.expect("the socket was not closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_that_stops_reading_is_closed_at_the_write_deadline() {
    // A queue the flood cannot fill: the hub never cuts it, only the deadline can end it.
    // The shipped queue: its filling does not end the stream (it would catch up from the
    // store), only the socket's deadline does.
    let gw = Gateway::start(|c| {
        c.write_timeout_ms = 300;
        c.resume_burst = 100.0;
    })
    .await;
    let mut sock = stalled_stream(&gw, &Channel::ORDERS, EventType::ORDER_RECEIVED).await;
    assert!(
        testkit::wait_until(T, || async { metric(&gw, &sse_active(0)).await }).await,
        "the stalled stream still holds its socket"
    );
    assert!(metric(&gw, &closed("write_timeout", 1)).await);
    let got = read_to_close(&mut sock, T).await.expect("the socket was not closed");
    // The client sees the end of what was written, then the close.
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Its cursor resumes exactly: the last whole message's id, then the next event.
    let (cursor, last) = last_whole(&got);
    assert!(last < 19_999, "the stall came before the end of the flood");
    resumes_exactly(&gw, &cursor, last).await;
}

/// A stream resumed at `cursor` (after event `last` of a 20,000-event flood of `orders`) gets
/// every later event once, in order. Resumed again, as EventSource would, if the gateway's short
/// write deadline closes this reader too (a test thread on a loaded machine can pause longer).
async fn resumes_exactly(gw: &Gateway, cursor: &str, last: usize) {
    let (mut cursor, mut want, mut streams) = (cursor.to_owned(), last + 1, 0);
    while want < 20_000 {
        streams += 1;
        assert!(streams <= 20, "resumed {streams} times and still not at the end");
        let mut resumed = gw.open("?channels=orders", Some(&cursor)).await;
        while want < 20_000 {
            let Some(m) = resumed.next_message(T).await else { break };
            let e = common::envelope(&m);
            assert_eq!(e.payload.id, want.to_string(), "the resume is not exact");
            cursor = m.id.clone().expect("an event carries its cursor");
            want += 1;
        }
    }
}

/// The id and payload id of the last whole message in `got` (an SSE response so far).
fn last_whole(got: &[u8]) -> (String, usize) {
    let text = String::from_utf8_lossy(got);
    let whole: Vec<&str> = text.split("\n\n").collect();
    whole[..whole.len() - 1]
        .iter()
        .rev()
        .find_map(|m| {
            let id = m.lines().find_map(|l| l.strip_prefix("id: "))?;
            let data: Value = serde_json::from_str(m.lines().find_map(|l| l.strip_prefix("data: "))?).ok()?;
            Some((id.to_owned(), data["payload"]["id"].as_str()?.parse::<usize>().ok()?))
        })
        .expect("some event was written before the client was closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_that_takes_a_trickle_is_closed_by_the_unsent_rule_and_resumes_exactly() {
    trickle_is_closed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_on_a_keep_alive_connection_is_closed_by_the_same_rule() {
    // A stream asked for after another request on the connection: hyper serves it, the
    // socket's own wrapper keeps the rule (`service_kit::deadline`).
    trickle_is_closed(true).await;
}

/// Reads one response with a `content-length` from `sock`; its status line.
async fn one_response(sock: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(T, sock.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= len {
                return head.lines().next().unwrap().to_owned();
            }
        }
    }
}

/// The body of a chunked response so far (`got`, from its status line): its whole chunks.
fn dechunk(got: &[u8]) -> Vec<u8> {
    let start = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let (mut rest, mut body) = (&got[start..], Vec::new());
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        let Some(chunk) = rest.get(eol + 2..eol + 2 + size) else {
            break;
        };
        body.extend_from_slice(chunk);
        rest = rest.get(eol + 4 + size..).unwrap_or_default();
    }
    body
}

/// A stream of `orders` whose client reads 1 KiB every 20 ms is closed by the unsent rule
/// (never by the write deadline), and its cursor resumes exactly; `keep_alive`: the stream is
/// the connection's second request.
async fn trickle_is_closed(keep_alive: bool) {
    // The socket always takes something (no write deadline can end it): only the rule of
    // `slow_unsent_bytes` for `slow_unsent_ms` does.
    let gw = Gateway::start(|c| {
        c.write_timeout_ms = 600_000;
        c.slow_unsent_ms = 500;
        c.resume_burst = 100.0;
    })
    .await;
    let mut sock = tight(&gw.base).await;
    if keep_alive {
        sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        assert!(one_response(&mut sock).await.starts_with("HTTP/1.1 200"));
    }
    let request = "GET /api/realtime/events?channels=orders HTTP/1.1\r\nhost: t\r\n\r\n";
    sock.write_all(request.as_bytes()).await.unwrap();
    assert!(testkit::wait_until(T, || async { metric(&gw, &sse_active(1)).await }).await);
    // 1 KiB every 20 ms until the server has closed; then what the kernel still holds, at once.
    let closed_now = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fast = closed_now.clone();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if !fast.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    flood(&gw, &Channel::ORDERS, EventType::ORDER_RECEIVED, 20_000).await;
    assert!(
        testkit::wait_until(T, || async { metric(&gw, &sse_active(0)).await }).await,
        "the trickling stream still holds its socket"
    );
    closed_now.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(metric(&gw, &closed("too_slow", 1)).await);
    assert!(metric(&gw, &closed("write_timeout", 0)).await);
    // What reached the client before the close ends where its cursor resumes exactly.
    let got = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the socket was not closed")
        .unwrap();
    let got = if keep_alive { dechunk(&got) } else { got };
    let (cursor, last) = last_whole(&got);
    assert!(last < 19_999, "the close came before the end of the flood");
    resumes_exactly(&gw, &cursor, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_hub_cuts_closes_at_once_even_while_its_write_waits() {
    // A deadline the test would not wait for: the cut alone must close the socket. A state
    // channel: a full queue puts events aside per entity, so the cut (past max_collapsed)
    // comes only once the writes wait, the kernel's buffers full.
    stalled_stream_is_closed(
        (Channel::INVENTORY, EventType::INVENTORY_CHANGE),
        |c| {
            c.connection_queue = 16;
            c.max_collapsed = 1_000;
            c.write_timeout_ms = 600_000;
        },
        "realtime_slow_consumer_disconnects_total{instance=\"test-gw\"} 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_that_reads_nothing_is_closed_at_the_write_deadline() {
    let gw = Gateway::start(|c| c.write_timeout_ms = 300).await;
    let mut sock = tight(&gw.base).await;
    // Requests for the metrics page (several KB each) it never reads; the writes stop when the
    // server stops reading, so they run beside the test.
    let (mut rd, mut wr) = sock.split();
    let writer = async {
        for _ in 0..5_000 {
            if wr.write_all(b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n").await.is_err() {
                break;
            }
        }
    };
    let watcher = async {
        assert!(
            testkit::wait_until(T, || async { metric(&gw, &closed("write_timeout", 1)).await }).await,
            "the connection is still open"
        );
    };
    tokio::time::timeout(T * 2, async { tokio::join!(writer, watcher) })
        .await
        .expect("the writes never ended");
    let mut buf = Vec::new();
    assert!(
        tokio::time::timeout(T, rd.read_to_end(&mut buf)).await.is_ok(),
        "the socket was not closed"
    );
}

#[tokio::test]
async fn sockets_that_send_nothing_are_capped_and_timed_out() {
    let gw = Gateway::start(|c| {
        c.max_pending_connections = 2;
        c.request_timeout_ms = 1_000;
    })
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Both are accepted (and counted) before the third arrives: the server reads in order, so
    // a request on a fourth connection that fails proves it.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let refused = read_to_close(&mut third, T).await.expect("the third was not closed");
    let text = String::from_utf8_lossy(&refused);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"too_many_pending\""), "{text}");
    // The silent ones are closed when their time to send a request is over.
    for s in &mut silent {
        assert!(
            read_to_close(s, Duration::from_secs(5)).await.is_some(),
            "a silent connection outlived request_timeout_ms"
        );
    }
    assert!(metric(&gw, &closed("pending_full", 1)).await);
    assert!(metric(&gw, &closed("request_timeout", 2)).await);
    // Room again.
    assert_eq!(gw.get("/healthz").await.0, 200);
}

/// One `GET /healthz` on `sock`, kept alive; the answer's head and body.
async fn health_on(sock: &mut TcpStream) -> String {
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok") {
        match tokio::time::timeout(T, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A connection keeps its place among those that are no stream while it idles between
/// requests (keep-alive) and while its WebSocket waits for the `auth` message; it gives the
/// place back once it is an authenticated stream.
#[tokio::test]
async fn idle_keep_alives_and_websockets_waiting_for_auth_are_counted() {
    let gw = jwt_gateway(|c| {
        c.max_pending_connections = 2;
        c.request_timeout_ms = 20_000;
    })
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    assert!(health_on(&mut idle).await.starts_with("HTTP/1.1 200"));
    let mut waiting = ws(&gw, "?channels=orders&notifications=false").await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let refused = read_to_close(&mut third, T).await.expect("the third was not closed");
    let text = String::from_utf8_lossy(&refused);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too_many_pending"),
        "{text}"
    );
    // Authenticated, the WebSocket is a stream: its place is free for another connection.
    let auth = json!({"op": "auth", "id": 1, "token": token(60)});
    waiting.send(Message::Text(auth.to_string().into())).await.unwrap();
    assert_eq!(next(&mut waiting).await["authenticated"], true);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if health_on(&mut s).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the WebSocket kept its place");
        // The place is given back just after the acknowledgement is sent: polled.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The idle keep-alive connection is still served, on the place it kept.
    assert!(health_on(&mut idle).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn lean_heads_over_the_limit_get_431_and_bare_lf_heads_are_served() {
    let gw = Gateway::start(|_| {}).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    let big = format!(
        "GET /api/realtime/events HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n",
        "a".repeat(17_000)
    );
    // The server may answer before it has read everything: the write may then fail.
    let _ = sock.write_all(big.as_bytes()).await;
    let got = read_to_close(&mut sock, T).await.expect("not closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["code"], "head_too_large");

    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"GET /api/realtime/events?channels=orders HTTP/1.1\nhost: t\n\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let mut got = Vec::new();
    while !got.windows(9).any(|w| w == b"connected") {
        let n = tokio::time::timeout(T, sock.read(&mut buf))
            .await
            .expect("a bare-LF head was not answered")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream"));
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let gw = Gateway::start(|c| c.request_timeout_ms = 500).await;
    let mut sock = TcpStream::connect(gw.base.trim_start_matches("http://")).await.unwrap();
    sock.write_all(
        b"POST /api/realtime/publish HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"chan",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(T, sock.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws(gw: &Gateway, query: &str) -> Ws {
    let url = format!("{}/api/realtime/ws{query}", gw.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next text frame as JSON, or the close code (as `{"close": code}`).
async fn next(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("nothing arrived") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(f))) => return json!({"close": f.map(|f| u16::from(f.code))}),
            Some(Ok(_)) => continue,
            other => return json!({"gone": format!("{other:?}")}),
        }
    }
}

/// Unsubscribes `orders` (command id 1).
async fn unsubscribe_orders(socket: &mut Ws) {
    let command = json!({"op": "unsubscribe", "id": 1, "channels": ["orders"]});
    socket.send(Message::Text(command.to_string().into())).await.unwrap();
}

#[tokio::test]
async fn a_websocket_refused_by_a_limit_is_closed_not_kept() {
    let gw = Gateway::start(|c| c.max_connections_per_client = 1).await;
    let _sse = gw.open("?channels=orders", None).await;
    let mut socket = ws(&gw, "?channels=orders").await;
    let e = next(&mut socket).await;
    assert_eq!(e["code"], "too_many_connections_for_client", "{e}");
    assert_eq!(next(&mut socket).await, json!({"close": 1013}));
}

#[tokio::test]
async fn a_websocket_without_a_stream_is_closed_after_ws_streamless_ms() {
    let gw = Gateway::start(|c| c.ws_streamless_ms = 300).await;
    let mut socket = ws(&gw, "?channels=orders").await;
    unsubscribe_orders(&mut socket).await;
    let ack = next(&mut socket).await;
    assert_eq!(
        (ack["op"].as_str(), ack["channels"].clone()),
        (Some("ack"), json!([])),
        "{ack}"
    );
    assert_eq!(next(&mut socket).await, json!({"close": 4009}));
    assert!(metric(&gw, &closed("streamless", 1)).await);
}

const SECRET: &str = "a-bounds-test-secret-of-32-characters";

fn token(ttl_secs: u64) -> String {
    let exp = event_bus::Timestamp::now_ms() / 1000 + ttl_secs;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ana", "exp": exp, "channels": ["orders"]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn jwt_gateway(tweak: impl FnOnce(&mut sse_gateway::GatewayConfig)) -> Gateway {
    Gateway::start(|c| {
        c.auth.mode = sse_gateway::auth::AuthMode::Jwt;
        c.auth.hs256_secret = Some(SECRET.into());
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn a_websocket_session_ends_with_its_token_even_without_a_stream() {
    let gw = jwt_gateway(|_| {}).await;
    // Without the private channel: unsubscribing orders leaves no stream.
    let mut socket = ws(
        &gw,
        &format!("?channels=orders&notifications=false&access_token={}", token(2)),
    )
    .await;
    unsubscribe_orders(&mut socket).await;
    assert_eq!(next(&mut socket).await["op"], "ack");
    let e = next(&mut socket).await;
    assert_eq!(e["code"], "token_expired", "{e}");
    assert_eq!(next(&mut socket).await, json!({"close": 4001}));
}

#[tokio::test]
async fn cross_origin_websockets_are_refused_unless_allowed() {
    let gw = Gateway::start(|c| c.allowed_origins = vec!["https://panel.example.com".into()]).await;
    let url = format!("{}/api/realtime/ws", gw.base.replace("http://", "ws://"));
    let host = gw.base.trim_start_matches("http://").to_owned();
    let with_origin = |origin: &str| {
        let mut r = url.as_str().into_client_request().unwrap();
        r.headers_mut().insert("origin", origin.parse().unwrap());
        r
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 403);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["code"], "origin_not_allowed");
        }
        other => panic!("a cross-origin upgrade was not refused: {other:?}"),
    }
    for ok in ["https://panel.example.com".to_owned(), format!("http://{host}")] {
        assert!(
            tokio_tungstenite::connect_async(with_origin(&ok)).await.is_ok(),
            "{ok} was refused"
        );
    }
}

#[tokio::test]
async fn cookie_authenticated_changes_must_be_json_from_an_allowed_origin() {
    let gw = jwt_gateway(|c| c.notifications.enabled = true).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/notifications/read-all", gw.base);
    let cookie = format!("rakuda_token={}", token(600));
    let send = |headers: &[(&str, &str)], body: &'static str| {
        let mut r = client.post(&url).body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null)["code"].clone())
        }
    };
    // What a form on another site can send: refused.
    let (s, code) = send(
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "a=1",
    )
    .await;
    assert_eq!((s, code), (415, json!("json_required")));
    let (s, code) = send(
        &[
            ("cookie", &cookie),
            ("content-type", "application/json"),
            ("origin", "https://evil.example"),
        ],
        "{}",
    )
    .await;
    assert_eq!((s, code), (403, json!("origin_not_allowed")));
    // The page's own fetch: JSON from its own origin.
    let own = gw.base.clone();
    let (s, _) = send(
        &[
            ("cookie", &cookie),
            ("content-type", "application/json"),
            ("origin", &own),
        ],
        "{}",
    )
    .await;
    assert_eq!(s, 200);
    // A bearer token is sent on purpose: no such checks.
    let bearer = format!("Bearer {}", token(600));
    let (s, _) = send(&[("authorization", &bearer), ("content-type", "text/plain")], "").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn resuming_in_a_loop_is_rate_limited_per_client() {
    let gw = Gateway::start(|c| {
        c.resume_burst = 2.0;
        c.resume_rate_per_sec = 0.01;
    })
    .await;
    let mut s = gw.open("?channels=orders", None).await;
    gw.publish(&Channel::ORDERS, EventType::ORDER_RECEIVED, "o-1").await;
    let cursor = s.next_message(T).await.unwrap().id.unwrap();
    drop(s);
    for _ in 0..2 {
        assert_eq!(gw.stream("?channels=orders", Some(&cursor)).await.status, 200);
    }
    let refused = gw.stream("?channels=orders", Some(&cursor)).await;
    assert_eq!(refused.status, 429);
    assert!(refused.headers.get("retry-after").is_some());
    // Opening without a cursor replays nothing and is not limited this way.
    assert_eq!(gw.stream("?channels=orders", None).await.status, 200);
}
