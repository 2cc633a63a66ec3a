//! What a session sends besides the stream: answers to commands, errors, the close frame.

use std::time::Duration;

use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message, Utf8Bytes,
};

/// An upgraded socket: tungstenite reads it and writes what a session answers; a stream's
/// chunks are written to it directly (`super::encoder`).
pub type Socket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// The token expired: reconnect with a fresh one, from the last cursor.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// No valid token.
pub const CLOSE_UNAUTHORIZED: u16 = 4003;
/// The client did not keep up: resume from the last cursor.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// The session had no stream for `ws_streamless_ms`: subscribe, or close the socket.
pub const CLOSE_STREAMLESS: u16 = 4009;
/// The server drains or stops: reconnect.
pub const CLOSE_RESTART: u16 = 1012;
/// The backplane is down: try again later.
pub const CLOSE_TRY_LATER: u16 = 1013;

/// Sends `body`; false when the socket is broken (or the write ran past its deadline).
pub(crate) async fn send(socket: &mut Socket, body: Value) -> bool {
    socket.send(Message::Text(body.to_string().into())).await.is_ok()
}

pub(crate) async fn send_error(socket: &mut Socket, id: Option<Value>, code: &str, message: &str) -> bool {
    send(
        socket,
        json!({"op": "error", "id": id, "code": code, "message": message}),
    )
    .await
}

pub(crate) fn ack_body(id: Option<Value>, mut body: Value) -> Value {
    body["op"] = json!("ack");
    body["id"] = id.unwrap_or(Value::Null);
    body
}

pub(crate) async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.send(close)).await;
}
