//! The lean path for stream requests: `serve` hands it connections whose first bytes are
//! `GET /api/realtime/events`. It reads the request head once, runs the same checks as the
//! router's handler ([`super::sse::open_sse`]), then writes the stream straight to the socket,
//! close-delimited (`Connection: close`), with no HTTP machinery kept per connection.
//!
//! Why: an SSE connection lives for hours and never makes a second request, but hyper keeps
//! an 8 KiB read buffer and an 8 KiB header buffer for each connection all that time; at 10k
//! idle streams those two buffers are most of the gateway's memory (`make bench`, idle).

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::Instant,
};

use super::{
    query::StreamQuery,
    sse::open_sse,
    write::{write, Pace},
};
use crate::{app::AppState, error::ApiError, telemetry::metrics::Closed};

/// The request-line prefix `serve` routes here (an exact path follows: ` ` or `?`).
pub const PREFIX: &[u8] = b"GET /api/realtime/events";
/// Largest request head accepted; a longer one is answered 431.
pub const MAX_HEAD: usize = 16 * 1024;

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache, no-transform\r\nx-accel-buffering: no\r\nconnection: close\r\n\r\n";

/// Whether the peeked bytes start a stream request for the lean path.
pub fn wants(peeked: &[u8]) -> bool {
    super::requests(peeked, PREFIX)
}

/// Serves one stream request on `sock` until the stream ends, the client goes away, or a
/// write makes no progress for `write_timeout_ms`. The head must be complete by `head_by`;
/// `pending` (the connection's place among those that have not sent a request yet) is given
/// back once it is.
pub async fn serve(
    mut sock: TcpStream,
    peer: SocketAddr,
    state: AppState,
    pending: OwnedSemaphorePermit,
    head_by: Instant,
) {
    let pace = Pace::of(state.config());
    let write_limit = pace.stalled;
    let opened = {
        // The head buffer lives only until the stream is open.
        // Boxed, as the opening below: what only the start needs (a read buffer, the bus's
        // answer to a first follow) would otherwise size the stream's task for its whole life.
        let request = match tokio::time::timeout_at(head_by, Box::pin(read_head(&mut sock))).await {
            Ok(Ok(r)) => r,
            Ok(Err(HeadError::TooLarge)) => {
                state.metrics().closed(Closed::HeadTooLarge);
                let message = format!("the request head is larger than {MAX_HEAD} bytes");
                let e = refusal(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "head_too_large", message);
                return answer(&mut sock, &e, write_limit).await;
            }
            Ok(Err(HeadError::Io)) => return,
            Err(_) => {
                state.metrics().closed(Closed::RequestTimeout);
                let message = "the request head did not arrive in time".into();
                let e = refusal(StatusCode::REQUEST_TIMEOUT, "request_timeout", message);
                return answer(&mut sock, &e, write_limit).await;
            }
        };
        drop(pending);
        match parse(&request) {
            Ok((query, headers)) => Box::pin(open_sse(&state, query, &headers, Some(peer))).await,
            Err(e) => Err(e),
        }
    };
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => return answer(&mut sock, &e, write_limit).await,
    };
    if !matches!(
        tokio::time::timeout(write_limit, sock.write_all(HEAD)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            chunk = stream.next_chunk() => match chunk {
                Some(chunk) => {
                    // Most chunks fit the socket's buffer at once: one send, no deadline.
                    let written = match chunk.try_write(&sock) {
                        Ok(None) => Ok(()),
                        // The rest is bounded (`super::write`): a client that stops reading, or
                        // takes a trickle, is closed; and a stream the hub cut closes at once.
                        Ok(Some(rest)) => write(&mut sock, &rest, &pace, stream.cut()).await,
                        Err(_) => return,
                    };
                    if let Err(failed) = written {
                        failed.record(state.metrics(), &pace);
                        return;
                    }
                }
                None => break,
            },
            // A client that leaves is noticed at once, not at the next write. The readiness
            // is polled in place (the socket keeps one waker), not a `readable()` future that
            // joins and leaves the socket's waiter list under its lock once per chunk.
            ready = std::future::poll_fn(|cx| sock.poll_read_ready(cx)) => {
                if ready.is_err() {
                    return;
                }
                match sock.try_read(&mut probe) {
                    Ok(0) => return,
                    Ok(_) => {} // nothing more is expected on a stream request; ignore it
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    }
    let _ = tokio::time::timeout(write_limit, sock.shutdown()).await;
}

fn refusal(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError {
        status,
        code,
        message,
        retry_after: None,
    }
}

/// Writes `e` as the whole response and closes, within one write deadline.
async fn answer(sock: &mut TcpStream, e: &ApiError, limit: std::time::Duration) {
    let _ = tokio::time::timeout(limit, async {
        sock.write_all(&error_response(e)).await?;
        sock.shutdown().await
    })
    .await;
}

/// Why a head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// Longer than [`MAX_HEAD`].
    TooLarge,
    /// The client went away, or the socket broke.
    Io,
}

async fn read_head(sock: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head = Head::default();
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        if head.push(&buf[..n])? {
            return Ok(head.bytes);
        }
    }
}

/// A request head as it arrives: each byte is looked at once, whatever the split.
#[derive(Debug, Default)]
struct Head {
    /// What has arrived; none of it but its last two bytes can start an end.
    bytes: Vec<u8>,
}

impl Head {
    /// Adds `more`; true once the head is complete (a blank line, CRLF or bare LF as
    /// httparse reads them). Refused before it is copied if it would pass [`MAX_HEAD`].
    fn push(&mut self, more: &[u8]) -> Result<bool, HeadError> {
        if self.bytes.len() + more.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        // An end is `\n\n` or `\n\r\n`: look from two bytes before the new ones.
        let from = self.bytes.len().saturating_sub(2);
        self.bytes.extend_from_slice(more);
        let window = &self.bytes[from..];
        let found = window.iter().enumerate().any(|(i, &b)| {
            b == b'\n' && (window.get(i + 1) == Some(&b'\n') || window.get(i + 1..i + 3) == Some(b"\r\n"))
        });
        Ok(found)
    }
}

/// [`crate::fuzzing::lean_head`]: `data` in pieces of `piece` bytes through the head reader,
/// checked against the whole, then parsed.
pub(crate) fn fuzz_head(data: &[u8], piece: usize) {
    // Where the whole input's first end is: the head is complete once that much has arrived.
    let first = |pat: &[u8]| data.windows(pat.len()).position(|w| w == pat).map(|i| i + pat.len());
    let end = [first(b"\n\n"), first(b"\n\r\n")].into_iter().flatten().min();
    let mut head = Head::default();
    let mut fed = 0;
    for chunk in data.chunks(piece) {
        match head.push(chunk) {
            Ok(done) => {
                fed += chunk.len();
                assert_eq!(done, end.is_some_and(|e| fed >= e), "the end is found where it is");
                if done {
                    let _ = parse(&head.bytes);
                    return;
                }
            }
            Err(e) => {
                assert_eq!(e, HeadError::TooLarge);
                assert!(fed + chunk.len() > MAX_HEAD && head.bytes.len() <= MAX_HEAD);
                return;
            }
        }
    }
}

fn parse(request: &[u8]) -> Result<(StreamQuery, HeaderMap), ApiError> {
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut raw);
    match req.parse(request) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(ApiError::bad_request(
                "bad_request",
                "the request head could not be parsed",
            ))
        }
    }
    let path = req.path.unwrap_or("/");
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query: StreamQuery = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request("bad_query", format!("the query string is not valid: {e}")))?;
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(name, value);
        }
    }
    Ok((query, headers))
}

fn error_response(e: &ApiError) -> Vec<u8> {
    let body = serde_json::json!({"code": e.code, "message": e.message}).to_string();
    let reason = e.status.canonical_reason().unwrap_or("");
    let extra: String = e
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap_or_default()))
        .collect();
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
        e.status.as_u16(),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_headers_of_its_status() {
        let text = |e: ApiError| String::from_utf8(error_response(&e)).unwrap();
        let missing = crate::auth::principal::AuthError::Missing("rakuda_token".into());
        let unauthorized = text(ApiError::unauthorized(&missing));
        assert!(
            unauthorized.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{unauthorized}"
        );
        assert!(
            unauthorized.contains("\r\nwww-authenticate: Bearer realm=\"rakuda-realtime\"\r\n"),
            "{unauthorized}"
        );
        let full = text(ApiError::unavailable("too_many_connections", "full", 5));
        assert!(full.contains("\r\nretry-after: 5\r\n"), "{full}");
        assert!(!full.contains("www-authenticate"), "{full}");
    }

    #[test]
    fn only_the_exact_stream_path_takes_the_lean_path() {
        assert!(wants(b"GET /api/realtime/events HTTP/1.1\r\n"));
        assert!(wants(b"GET /api/realtime/events?channels=orders HTTP/1.1"));
        assert!(!wants(b"GET /api/realtime/eventsource HTTP/1.1"));
        assert!(!wants(b"POST /api/realtime/events HTTP/1.1"));
        assert!(!wants(b"GET /api/realtime/status HTTP/1.1"));
        assert!(!wants(b"GET /api/realtime/ev"));
    }

    #[test]
    fn a_head_is_found_whatever_the_split_looking_at_each_byte_once() {
        let text = b"GET /api/realtime/events HTTP/1.1\r\nhost: t\r\n\r\n";
        for split in 1..text.len() {
            let mut h = Head::default();
            let done: Vec<bool> = text.chunks(split).map(|c| h.push(c).unwrap()).collect();
            assert_eq!(done.iter().filter(|d| **d).count(), 1, "split {split}");
            assert!(*done.last().unwrap());
        }
        // Bare LF ends a head as well (httparse reads it).
        assert!(Head::default().push(b"GET / HTTP/1.1\nhost: t\n\n").unwrap());
        // A byte at a time up to the limit: work in proportion to the bytes, not their square.
        let mut h = Head::default();
        let mut examined = 0;
        let long = [b'a'; MAX_HEAD];
        for b in long.chunks(1) {
            let before = h.bytes.len().saturating_sub(2);
            assert!(!h.push(b).unwrap());
            examined += h.bytes.len() - before;
        }
        assert!(examined <= 3 * MAX_HEAD, "{examined}");
        // One byte more is refused before it is kept.
        assert_eq!(h.push(b"a"), Err(HeadError::TooLarge));
        assert_eq!(h.bytes.len(), MAX_HEAD);
    }

    #[test]
    fn errors_are_complete_json_responses() {
        let e = ApiError::unavailable("too_many_connections", "full", 5);
        let text = String::from_utf8(error_response(&e)).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
        assert!(text.contains("retry-after: 5\r\n") && text.contains("content-type: application/json"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            text.split("content-length: ")
                .nth(1)
                .unwrap()
                .split("\r\n")
                .next()
                .unwrap(),
            body.len().to_string()
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_connections");
    }
}
