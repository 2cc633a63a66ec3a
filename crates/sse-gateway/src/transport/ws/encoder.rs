//! A stream's frames as WebSocket frames, written straight into one buffer as SSE's are: each
//! message one text frame `{"op":"message","cursor":...,"data":...}`, a heartbeat a ping; the
//! start and the end say nothing here (the end is the close code). A chunk is written to the
//! socket whole, in one write, beside the WebSocket library (`session`): a server's frames are
//! not masked, so the bytes are the frame.

use bytes::{BufMut, BytesMut};

use crate::stream::frame::{Encoder, Frame, Out};

/// FIN and the text opcode.
const TEXT: u8 = 0x81;
/// FIN and the ping opcode.
const PING: u8 = 0x89;

/// Writes frames as WebSocket frames.
#[derive(Debug, Default)]
pub struct WsEncoder {
    out: Out,
}

impl WsEncoder {
    /// A frame's header: FIN, the opcode, the payload's length (unmasked).
    fn header(buf: &mut BytesMut, first: u8, len: usize) {
        buf.put_u8(first);
        match len {
            0..=125 => buf.put_u8(len as u8),
            126..=0xffff => {
                buf.put_u8(126);
                buf.put_u16(len as u16);
            }
            _ => {
                buf.put_u8(127);
                buf.put_u64(len as u64);
            }
        }
    }
}

impl Encoder for WsEncoder {
    fn encode(&mut self, frame: Frame<'_>) {
        let buf = &mut self.out.buf;
        match frame {
            Frame::Message { cursor, data, .. } => {
                const OP: &[u8] = b"{\"op\":\"message\"";
                const CURSOR: &[u8] = b",\"cursor\":\"";
                const DATA: &[u8] = b",\"data\":";
                let len = OP.len() + cursor.map_or(0, |c| CURSOR.len() + c.len() + 1) + DATA.len() + data.len() + 1;
                buf.reserve(len + 10);
                Self::header(buf, TEXT, len);
                buf.put_slice(OP);
                if let Some(c) = cursor {
                    // A cursor is base64url: nothing to escape.
                    buf.put_slice(CURSOR);
                    buf.put_slice(c);
                    buf.put_u8(b'"');
                }
                buf.put_slice(DATA);
                buf.put_slice(data);
                buf.put_u8(b'}');
            }
            Frame::Heartbeat => Self::header(buf, PING, 0),
            Frame::Open { .. } | Frame::End { .. } => {}
        }
    }

    fn framing(&self) -> usize {
        2
    }

    fn fresh(&self) -> Self {
        WsEncoder::default()
    }

    fn out(&mut self) -> &mut Out {
        &mut self.out
    }

    fn out_ref(&self) -> &Out {
        &self.out
    }
}

/// The frames in `bytes` (unmasked, as a server writes them): each one's first byte (FIN and
/// opcode) and payload; `None` if the bytes do not end at a frame's end.
pub fn frames(mut bytes: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while let [first, len, rest @ ..] = bytes {
        if len & 0x80 != 0 {
            return None; // masked: not a server's frame
        }
        let (len, rest) = match len {
            126 => (u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize, &rest[2..]),
            127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize, &rest[8..]),
            n => (*n as usize, rest),
        };
        out.push((*first, rest.get(..len)?));
        bytes = &rest[len..];
    }
    bytes.is_empty().then_some(out)
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
        let bytes = e.take().to_vec();
        let m = frames(&bytes).expect("whole frames");
        assert_eq!(m.len(), 3, "two messages and a ping; the start and the end say nothing");
        assert_eq!(m[0].0, TEXT);
        assert_eq!(
            std::str::from_utf8(m[0].1).unwrap(),
            format!(r#"{{"op":"message","cursor":"{cursor}","data":{{"a":1}}}}"#)
        );
        assert_eq!(m[1], (TEXT, &br#"{"op":"message","data":{}}"#[..]));
        assert_eq!(m[2], (PING, &b""[..]));
        assert!(e.is_empty());
    }

    #[test]
    fn each_length_takes_its_header_form_and_tungstenite_reads_the_frames() {
        for size in [0, 100, 125, 126, 1000, 0xffff, 0x10000, 200_000] {
            let data = format!("\"{}\"", "x".repeat(size));
            let mut e = WsEncoder::default();
            e.encode(Frame::Message {
                cursor: Some(b"AQ"),
                event: "E",
                data: data.as_bytes(),
            });
            let bytes = e.take().to_vec();
            let text = format!(r#"{{"op":"message","cursor":"AQ","data":{data}}}"#);
            assert_eq!(frames(&bytes), Some(vec![(TEXT, text.as_bytes())]), "{size}");
            // The library a client reads with agrees.
            let mut ws = tokio_tungstenite::tungstenite::WebSocket::from_raw_socket(
                std::io::Cursor::new(bytes.to_vec()),
                tokio_tungstenite::tungstenite::protocol::Role::Client,
                Some(
                    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                        .max_message_size(None)
                        .max_frame_size(None),
                ),
            );
            let read = ws.read().expect("a frame");
            assert_eq!(read.into_text().unwrap().as_str(), text, "{size}");
        }
        assert_eq!(frames(&[0x81, 5, b'a']), None, "cut short");
    }
}
