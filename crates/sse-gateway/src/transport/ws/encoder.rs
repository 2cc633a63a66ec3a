//! A stream's frames as WebSocket messages: each message one text frame
//! `{"op":"message","cursor":...,"data":...}` cut from one buffer (no copy per frame), a
//! heartbeat a ping; the start and the end say nothing here (the end is the close code).

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::{BufMut, BytesMut};

use crate::stream::frame::{Encoder, Frame};

/// Writes frames as WebSocket messages.
#[derive(Debug, Default)]
pub struct WsEncoder {
    buf: BytesMut,
    messages: Vec<Message>,
    /// The messages' bytes.
    bytes: usize,
}

impl Encoder for WsEncoder {
    type Chunk = Vec<Message>;

    fn encode(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Message { cursor, data, .. } => {
                self.buf.put_slice(b"{\"op\":\"message\"");
                if let Some(c) = cursor {
                    // A cursor is base64url: nothing to escape.
                    self.buf.put_slice(b",\"cursor\":\"");
                    self.buf.put_slice(c);
                    self.buf.put_u8(b'"');
                }
                self.buf.put_slice(b",\"data\":");
                self.buf.put_slice(data);
                self.buf.put_slice(b"}");
                let bytes = self.buf.split().freeze();
                self.bytes += bytes.len();
                if let Ok(text) = Utf8Bytes::try_from(bytes) {
                    self.messages.push(Message::Text(text));
                }
            }
            Frame::Heartbeat => self.messages.push(Message::Ping(bytes::Bytes::new())),
            Frame::Open { .. } | Frame::End { .. } => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn len(&self) -> usize {
        self.bytes
    }

    fn take(&mut self) -> Vec<Message> {
        self.bytes = 0;
        std::mem::take(&mut self.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_text_frames_and_the_heartbeat_a_ping() {
        let mut e = WsEncoder::default();
        e.encode(Frame::Open { retry_ms: 1, conn: 1 });
        assert!(e.is_empty(), "a socket has nothing like retry: to say");
        let cursor = crate::stream::frame::samples::feed(&mut e);
        let m = e.take();
        assert_eq!(m.len(), 3, "two messages and a ping; the start and the end say nothing");
        let Message::Text(t) = &m[0] else { panic!("{m:?}") };
        assert_eq!(
            t.as_str(),
            format!(r#"{{"op":"message","cursor":"{cursor}","data":{{"a":1}}}}"#)
        );
        assert!(matches!(&m[1], Message::Text(t) if t.as_str() == r#"{"op":"message","data":{}}"#));
        assert!(matches!(&m[2], Message::Ping(p) if p.is_empty()));
        assert!(e.is_empty());
    }
}
