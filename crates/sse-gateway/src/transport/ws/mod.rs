//! `GET /api/realtime/ws`: the same streams over one WebSocket, in both directions.
//!
//! A session is the same stream as SSE ([`crate::stream`]) written by another encoder
//! ([`encoder`]: each message one text frame, all of a chunk's frames in one write), so
//! everything SSE guarantees
//! holds here too: one cursor over every channel,
//! replay on resume, grouping, RESYNC, the unread snapshot, the slow-consumer cut, the token's
//! expiry, the drain. `subscribe` and `unsubscribe` open a new stream from the session's
//! cursor, which is exactly a reconnect with `Last-Event-ID`: nothing lost, nothing twice.
//!
//! Server → client, JSON text frames (`proto-schemas/ws-server.schema.json`):
//! - `{"op":"message","cursor":"...","data":{...}}`: `data` is exactly what SSE puts in
//!   `data:` (an envelope, a group, `RESYNC`, `NOTIFICATION_UNREAD`), `cursor` what SSE puts
//!   in `id:` (absent where SSE has none: `TOKEN_EXPIRED`);
//! - `{"op":"ack","id":...,...}` and `{"op":"error","id":...,"code":"...","message":"..."}`
//!   for each command (`id` echoed), `{"op":"pong","id":...}`.
//!
//! Client → server (`proto-schemas/ws-client.schema.json`): `auth` (the token, as the first
//! message when the URL carries none), `subscribe` (`channels`, `types`, `ids`,
//! `notifications`, optional `cursor`), `unsubscribe` (`channels`), `mark_read`
//! (`notification_id`), `mark_all_read`, `ping`. A malformed command gets an `error` and the
//! socket stays open; a message over 64 KiB closes it with 1009.
//!
//! Close codes: 4001 the token expired (reconnect with a fresh one and the last cursor), 4003
//! not authenticated, 4008 too slow (resume from the last cursor), 1012 the server drains
//! (reconnect, elsewhere), 1013 the backplane is down (try again later).
//!
//! # Layout
//! - [`upgrade`]: the upgrade and the socket's authentication.
//! - [`session`]: one socket's life: subscription, stream, commands.
//! - [`reply`]: answers, errors, the close frame.
//! - [`command`]: what a client may send.
//! - [`encoder`]: a stream's frames as WebSocket messages.

pub mod command;
pub mod encoder;
pub mod reply;
pub mod session;
pub mod upgrade;

pub use upgrade::upgrade;

/// The request-line prefix `serve` routes to the upgrade-capable path.
pub const PREFIX: &[u8] = b"GET /api/realtime/ws";
/// Whether the peeked bytes start a WebSocket request (served with HTTP upgrades).
pub fn wants(peeked: &[u8]) -> bool {
    super::requests(peeked, PREFIX)
}
