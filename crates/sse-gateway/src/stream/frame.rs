//! What a stream says, typed, and the encoder each transport writes it with: SSE writes SSE
//! (`transport::sse`), the WebSocket writes WebSocket frames (`transport::ws::encoder`). The
//! stream never sees bytes of either framing.

use bytes::{Bytes, BytesMut};

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
/// several pending frames leave in one write; bytes encoded once for many streams join them
/// as they are ([`Encoder::put_shared`]), not copied.
pub trait Encoder: Send + Sized + 'static {
    /// Adds a frame.
    fn encode(&mut self, frame: Frame<'_>);
    /// The framing, for bytes shared by every stream that writes it (`hub::event`): one
    /// index per distinct framing below [`FRAMINGS`].
    fn framing(&self) -> usize;
    /// An empty encoder of the same framing.
    fn fresh(&self) -> Self;
    /// What was added since the last take.
    fn out(&mut self) -> &mut Out;
    /// The same, to look at.
    fn out_ref(&self) -> &Out;
    /// Nothing added since the last take.
    fn is_empty(&self) -> bool {
        self.out_ref().is_empty()
    }
    /// Bytes added since the last take (what the next write will carry).
    fn len(&self) -> usize {
        self.out_ref().len()
    }
    /// Room for `additional` more bytes, made at once (a batch of known size would otherwise
    /// grow its buffer copy after copy).
    fn reserve(&mut self, additional: usize) {
        self.out().buf.reserve(additional);
    }
    /// Adds frames already encoded in this framing, shared: nothing is copied.
    fn put_shared(&mut self, bytes: Bytes) {
        self.out().put_shared(bytes);
    }
    /// Everything added since the last take.
    fn take(&mut self) -> Chunk {
        self.out().take()
    }
}

/// How many framings share encoded bytes: SSE, SSE with `event:`, the WebSocket.
pub const FRAMINGS: usize = 3;

/// What an encoder has added since its last take: its own bytes, and shared ones in between.
#[derive(Debug, Default)]
pub struct Out {
    /// Encoded here, after the last of `parts`.
    pub buf: BytesMut,
    parts: Vec<Bytes>,
    parts_len: usize,
}

impl Out {
    /// Nothing added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.parts.is_empty()
    }

    /// The bytes added.
    pub fn len(&self) -> usize {
        self.buf.len() + self.parts_len
    }

    /// Adds shared bytes after what is there.
    pub fn put_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if !self.buf.is_empty() {
            let own = self.buf.split().freeze();
            self.parts_len += own.len();
            self.parts.push(own);
        }
        self.parts_len += bytes.len();
        self.parts.push(bytes);
    }

    /// Everything added, in order.
    pub fn take(&mut self) -> Chunk {
        let mut parts = std::mem::take(&mut self.parts);
        self.parts_len = 0;
        if !self.buf.is_empty() {
            parts.push(self.buf.split().freeze());
        }
        Chunk { parts }
    }
}

/// One write: bytes in order, some of them shared with other streams (written vectored).
#[derive(Debug, Default)]
pub struct Chunk {
    parts: Vec<Bytes>,
}

impl Chunk {
    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The parts, to hand on.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// All of it as one `Bytes` (copied only if it has several parts).
    pub fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().expect("one part"),
            _ => Bytes::from(self.parts.concat()),
        }
    }

    /// All of it in one buffer (tests; and a writer that cannot write vectored).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// The bytes it has.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    /// Writes what the socket takes now, without waiting: the part not written is returned
    /// (`None`: all of it went).
    pub fn try_write(self, sock: &tokio::net::TcpStream) -> std::io::Result<Option<Chunk>> {
        let mut at = Progress::default();
        loop {
            let written = match at.slices(&self.parts) {
                None => return Ok(None),
                Some(slices) => sock.try_write_vectored(&slices),
            };
            match written {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => at.advance(&self.parts, n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(at.rest(self.parts))),
                Err(e) => return Err(e),
            }
        }
    }
}

/// How far a vectored write of parts has gone.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    part: usize,
    offset: usize,
}

impl Progress {
    /// The rest as slices (at most 64 at once); `None` once all is written.
    pub(crate) fn slices<'a>(&self, parts: &'a [Bytes]) -> Option<smallvec::SmallVec<[std::io::IoSlice<'a>; 8]>> {
        let rest = parts.get(self.part..)?;
        let mut out: smallvec::SmallVec<[std::io::IoSlice<'a>; 8]> = rest
            .iter()
            .take(64)
            .enumerate()
            .map(|(i, p)| std::io::IoSlice::new(if i == 0 { &p[self.offset..] } else { p }))
            .collect();
        out.retain(|s| !s.is_empty());
        (!out.is_empty()).then_some(out)
    }

    pub(crate) fn advance(&mut self, parts: &[Bytes], mut n: usize) {
        while n > 0 {
            let left = parts[self.part].len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.part += 1;
            self.offset = 0;
        }
        while parts.get(self.part).is_some_and(|p| p.len() == self.offset) {
            self.part += 1;
            self.offset = 0;
        }
    }

    fn rest(self, mut parts: Vec<Bytes>) -> Chunk {
        let mut rest = parts.split_off(self.part.min(parts.len()));
        if let Some(first) = rest.first_mut() {
            let _ = first.split_to(self.offset);
        }
        Chunk { parts: rest }
    }
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

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn own_and_shared_bytes_leave_in_order_and_a_partial_write_leaves_the_rest() {
        let mut out = Out::default();
        out.buf.extend_from_slice(b"ab");
        out.put_shared(Bytes::from_static(b"cde"));
        out.put_shared(Bytes::new());
        out.buf.extend_from_slice(b"f");
        assert_eq!(out.len(), 6);
        let chunk = out.take();
        assert!(out.is_empty());
        assert_eq!(chunk.parts().len(), 3);
        assert_eq!(chunk.to_vec(), b"abcdef");
        for written in 0..=6 {
            let mut at = Progress::default();
            at.advance(&chunk.parts, written);
            let rest = at.rest(chunk.parts.clone());
            assert_eq!(rest.to_vec(), &b"abcdef"[written..], "after {written}");
        }
    }
}
