//! The transports: how a stream reaches a client. Each has its own encoder of the stream's
//! frames; both take their requests through [`query`].
//!
//! # Layout
//! - [`query`]: a stream request over HTTP (query, `Last-Event-ID`, token, client address).
//! - [`sse`]: SSE's encoder and the router's handler.
//! - [`lean`]: SSE streams served straight on the socket, without per-connection HTTP buffers.
//! - [`ws`]: the same streams over a WebSocket, with commands.
//! - `write`: the write step both share: a chunk to the socket under the slow-client rules.

pub mod lean;
pub mod query;
pub mod sse;
pub(crate) mod write;
pub mod ws;

/// Whether `peeked` (a connection's first bytes) starts a request whose line begins with
/// `prefix` and whose path is exactly that (a query may follow).
fn requests(peeked: &[u8], prefix: &[u8]) -> bool {
    peeked.starts_with(prefix) && matches!(peeked.get(prefix.len()), Some(b' ') | Some(b'?'))
}
