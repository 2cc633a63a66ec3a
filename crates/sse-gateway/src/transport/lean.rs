//! The lean path for stream requests: `serve` hands it connections whose first bytes are
//! `GET /api/realtime/events`. It reads the request head once, runs the same checks as the
//! router's handler ([`super::sse::open_sse`]), then writes the stream straight to the socket,
//! close-delimited (`Connection: close`), with no HTTP machinery kept per connection.
//!
//! Why: an SSE connection lives for hours and never makes a second request, but hyper keeps
//! an 8 KiB read buffer and an 8 KiB header buffer for each connection all that time; at 10k
//! idle streams those two buffers are most of the gateway's memory (`make bench`, idle).

use std::{net::SocketAddr, time::Duration};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{query::StreamQuery, sse::open_sse};
use crate::{app::AppState, error::ApiError};

/// The request-line prefix `serve` routes here (an exact path follows: ` ` or `?`).
pub const PREFIX: &[u8] = b"GET /api/realtime/events";
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache, no-transform\r\nx-accel-buffering: no\r\nconnection: close\r\n\r\n";

/// Whether the peeked bytes start a stream request for the lean path.
pub fn wants(peeked: &[u8]) -> bool {
    super::requests(peeked, PREFIX)
}

/// Serves one stream request on `sock` until the stream ends or the client goes away.
pub async fn serve(mut sock: TcpStream, peer: SocketAddr, state: AppState) {
    let opened = {
        // The head buffer lives only until the stream is open.
        let request = match tokio::time::timeout(Duration::from_secs(30), read_head(&mut sock)).await {
            Ok(Ok(r)) => r,
            _ => return,
        };
        match parse(&request) {
            Ok((query, headers)) => open_sse(&state, query, &headers, Some(peer)),
            Err(e) => Err(e),
        }
    };
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => {
            let _ = sock.write_all(&error_response(&e)).await;
            let _ = sock.shutdown().await;
            return;
        }
    };
    if sock.write_all(HEAD).await.is_err() {
        return;
    }
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            chunk = stream.next_chunk() => match chunk {
                Some(bytes) => {
                    if sock.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            // A client that leaves is noticed at once, not at the next write.
            ready = sock.readable() => {
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
    let _ = sock.shutdown().await;
}

async fn read_head(sock: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
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
    let retry = e
        .retry_after
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        e.status.as_u16(),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

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
