//! `GET /api/realtime/events` as SSE (`docs/reference.md`, "SSE"): the encoder that writes a
//! stream's frames as SSE, and the router's handler (`serve` usually takes these requests on
//! the lean path, [`super::lean`], which opens them the same way).

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::{ConnectInfo, Query, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Extension,
};
use bytes::BufMut;
use futures::StreamExt;

use super::query::{self, StreamQuery};
use crate::{
    app::AppState,
    error::ApiError,
    stream::{
        frame::{Encoder, Frame, Out},
        open::{accepting, open},
        session::Stream,
    },
    telemetry::transport::Transport,
};

/// Writes frames as SSE: `id:` (the cursor), `event:` (named streams), `data:`; comments for
/// the start, heartbeats and the end, with `retry:`.
#[derive(Debug, Default)]
pub struct SseEncoder {
    named: bool,
    out: Out,
}

impl SseEncoder {
    /// `named`: an `event:` line with each message's type.
    pub fn new(named: bool) -> Self {
        SseEncoder {
            named,
            out: Out::default(),
        }
    }

    fn put_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing into a BytesMut cannot fail.
        let _ = std::io::Write::write_fmt(&mut (&mut self.out.buf).writer(), args);
    }
}

impl Encoder for SseEncoder {
    fn encode(&mut self, frame: Frame<'_>) {
        let buf = &mut self.out.buf;
        match frame {
            Frame::Open { retry_ms, conn } => self.put_fmt(format_args!("retry: {retry_ms}\n: connected {conn}\n\n")),
            Frame::Message { cursor, event, data } => {
                // Room for the whole frame at once: no growing copy after copy.
                buf.reserve(cursor.map_or(0, |c| c.len() + 5) + event.len() + data.len() + 16);
                if let Some(c) = cursor {
                    buf.put_slice(b"id: ");
                    buf.put_slice(c);
                    buf.put_u8(b'\n');
                }
                if self.named {
                    buf.put_slice(b"event: ");
                    buf.put_slice(event.as_bytes());
                    buf.put_u8(b'\n');
                }
                buf.put_slice(b"data: ");
                buf.put_slice(data);
                buf.put_slice(b"\n\n");
            }
            Frame::Heartbeat => buf.put_slice(b": heartbeat\n\n"),
            Frame::End { reason, retry_ms } => {
                self.put_fmt(format_args!("retry: {retry_ms}\n: {}\n\n", reason.comment()))
            }
        }
    }

    fn framing(&self) -> usize {
        self.named as usize
    }

    fn fresh(&self) -> Self {
        SseEncoder::new(self.named)
    }

    fn out(&mut self) -> &mut Out {
        &mut self.out
    }

    fn out_ref(&self) -> &Out {
        &self.out
    }
}

/// Checks a stream request, then opens its SSE stream.
pub async fn open_sse(
    state: &AppState,
    q: StreamQuery,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Stream<SseEncoder>, ApiError> {
    accepting(state)?;
    let principal = query::authenticate(state, headers, &q)?;
    let request = query::request(state, &principal, &q, headers, peer)?;
    let named = ApiError::flag("bad_named", "named", q.named.as_deref(), false)?;
    Ok(open(state, &principal, request, Transport::Sse, SseEncoder::new(named)).await?)
}

/// `GET /api/realtime/events` through the router.
pub async fn events(
    State(state): State<AppState>,
    // Absent when the router is served without connect info (tests calling app().oneshot()).
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    pending: Option<Extension<crate::limit::Pending>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // JSON like the lean path's answer (`super::lean`), not axum's text.
    let Query(q) = query
        .map_err(|e| ApiError::bad_request("bad_query", format!("the query string is not valid: {}", e.body_text())))?;
    let stream = open_sse(&state, q, &headers, peer.map(|p| p.0 .0)).await?;
    // A stream now (on a keep-alive connection that came through hyper): its limits count it.
    if let Some(Extension(p)) = pending {
        p.release();
    }
    // Each chunk's parts as body frames: hyper writes them vectored.
    let chunks = futures::stream::unfold(stream, |mut s| async move { s.next_chunk().await.map(|c| (c, s)) });
    let body = Body::from_stream(
        chunks
            .flat_map(|c| futures::stream::iter(c.into_parts()))
            .map(Ok::<_, std::convert::Infallible>),
    );
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_sse() {
        let mut e = SseEncoder::new(true);
        assert!(e.is_empty());
        let cursor = crate::stream::frame::samples::feed(&mut e);
        let text = String::from_utf8(e.take().to_vec()).unwrap();
        assert_eq!(
            text,
            format!(
                "retry: 3000\n: connected 7\n\nid: {cursor}\nevent: ORDER_RECEIVED\ndata: {{\"a\":1}}\n\n\
                 event: TOKEN_EXPIRED\ndata: {{}}\n\n: heartbeat\n\nretry: 4000\n: server draining\n\n"
            )
        );
        assert!(e.is_empty());
        let mut unnamed = SseEncoder::new(false);
        crate::stream::frame::samples::feed(&mut unnamed);
        assert!(!String::from_utf8(unnamed.take().to_vec()).unwrap().contains("event:"));
    }
}
