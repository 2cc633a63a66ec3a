//! What a session sends besides the stream: answers to commands, errors, the close frame.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::{json, Value};

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
pub(crate) async fn send(socket: &mut WebSocket, body: Value) -> bool {
    socket.send(Message::Text(body.to_string().into())).await.is_ok()
}

pub(crate) async fn send_error(socket: &mut WebSocket, id: Option<Value>, code: &str, message: &str) -> bool {
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

pub(crate) async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.send(close)).await;
}
