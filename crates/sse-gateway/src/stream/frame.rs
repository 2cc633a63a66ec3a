//! What a stream says, typed, and the encoder each transport writes it with: SSE writes SSE
//! (`transport::sse`), the WebSocket writes WebSocket frames (`transport::ws::encoder`). The
//! stream never sees bytes of either framing.

/// One thing a stream says.
#[derive(Clone, Copy, Debug)]
pub enum Frame<'a> {
    /// The stream is open (SSE: `retry:` and a comment, so proxies and the browser see it).
    Open {
        /// How long a client waits before reconnecting, in ms.
        retry_ms: u64,
        /// The connection id (also in the logs).
        conn: u64,
    },
    /// A message: its JSON `data`, the `cursor` after it (none for `TOKEN_EXPIRED`, so the
    /// client resumes from its last event), and the `event` type (SSE's `event:` on named
    /// streams).
    Message {
        /// The position after this message, in its text form (base64url: nothing to escape).
        cursor: Option<&'a [u8]>,
        /// The event type.
        event: &'a str,
        /// One line of JSON.
        data: &'a [u8],
    },
    /// Nothing happened for a while: the connection is alive.
    Heartbeat,
    /// The stream ends, and why; `retry_ms` spreads reconnects out.
    End {
        /// Why.
        reason: Ended,
        /// How long the client waits before reconnecting, in ms.
        retry_ms: u64,
    },
}

/// Why a stream ended: SSE says it in the last comment, the WebSocket in its close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The token expired: reconnect with a fresh one.
    TokenExpired,
    /// The server drains: reconnect (elsewhere).
    Draining,
    /// The server holds more than its share of the streams: reconnect (through the load
    /// balancer), resuming as after a drain.
    Rebalancing,
    /// The process stops (the heartbeat is gone): reconnect (elsewhere).
    Stopping,
    /// The client did not keep up: resume from the last cursor.
    TooSlow,
    /// The backplane failed: try again later.
    Upstream,
    /// The hub closed the queue for another reason.
    Closed,
}

impl Ended {
    /// What to do, in words (SSE's last comment).
    pub fn comment(self) -> &'static str {
        match self {
            Ended::TokenExpired => "token expired: reconnect with a fresh token",
            Ended::Draining => "server draining",
            Ended::Rebalancing => "rebalancing: reconnect",
            Ended::Stopping => "server stopping",
            Ended::TooSlow => "too slow: resume from your last event id",
            Ended::Upstream => "upstream unavailable: reconnect later",
            Ended::Closed => "closed",
        }
    }
}

/// Writes frames in one transport's framing. Frames accumulate until [`Encoder::take`], so
/// several pending frames leave in one write.
pub trait Encoder: Send + 'static {
    /// What one write is (bytes for SSE, frames for the WebSocket).
    type Chunk;
    /// Adds a frame.
    fn encode(&mut self, frame: Frame<'_>);
    /// Nothing added since the last take.
    fn is_empty(&self) -> bool;
    /// Bytes added since the last take (what the next write will carry, about).
    fn len(&self) -> usize;
    /// Room for `additional` more bytes, made at once (a batch of known size would otherwise
    /// grow its buffer copy after copy).
    fn reserve(&mut self, _additional: usize) {}
    /// Everything added since the last take.
    fn take(&mut self) -> Self::Chunk;
}

/// Frames every encoder's tests feed it.
#[cfg(test)]
pub(crate) mod samples {
    use super::*;

    /// Every kind of frame once, as a stream could say them: open (retry 3000, connection 7),
    /// an `ORDER_RECEIVED` with `{"a":1}` at the returned cursor, `TOKEN_EXPIRED` without a
    /// cursor, a heartbeat, and the end (draining, retry 4000).
    pub(crate) fn feed(e: &mut impl Encoder) -> event_bus::Cursor {
        let mut cursor = event_bus::Cursor::new();
        cursor.set(event_bus::Channel::ORDERS, event_bus::EventId::new(5, 0));
        e.encode(Frame::Open {
            retry_ms: 3000,
            conn: 7,
        });
        let text = cursor.to_string();
        e.encode(Frame::Message {
            cursor: Some(text.as_bytes()),
            event: "ORDER_RECEIVED",
            data: b"{\"a\":1}",
        });
        e.encode(Frame::Message {
            cursor: None,
            event: "TOKEN_EXPIRED",
            data: b"{}",
        });
        e.encode(Frame::Heartbeat);
        e.encode(Frame::End {
            reason: Ended::Draining,
            retry_ms: 4000,
        });
        cursor
    }
}
