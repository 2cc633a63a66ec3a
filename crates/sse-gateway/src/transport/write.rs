//! The write step every stream transport shares (the lean SSE path and the WebSocket): a
//! stream's chunk to the client's socket, vectored, under the two rules that alone decide a
//! client is too slow (`docs/reference.md`, "Bursts" and "Connection limits"):
//!
//! - its socket took nothing for `write_timeout_ms`;
//! - more than `slow_unsent_bytes` (default 0: any) of a write stayed unsent for longer than
//!   `slow_unsent_ms`: a client that takes a trickle is not written to for ever. A write
//!   waits only once the kernel's buffer for the socket is full; a healthy client empties it
//!   within moments, a trickle keeps the write waiting though each read is progress.
//!
//! How far behind the stream is never decides: the hub's queue and the catch-up from the store
//! carry that. A stream the hub cut while its write waited ends at once.
//!
//! A stream that hyper writes (asked for on a keep-alive connection after another request) is
//! held to the same two rules by its socket's wrapper (`service_kit::deadline`, set up in
//! `server.rs` from the same [`Pace`]).

use std::{future::Future, time::Duration};

use tokio::{io::AsyncWrite, time::Instant};

use crate::{
    stream::frame::{Chunk, Progress},
    telemetry::metrics::{Closed, Metrics},
};

/// The rules of [`write`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    /// Longest a socket may take nothing.
    pub(crate) stalled: Duration,
    /// Unsent bytes of a chunk a client may hold...
    pub(crate) unsent_bytes: usize,
    /// ... for this long at most.
    pub(crate) unsent_for: Duration,
}

impl Pace {
    /// The gateway's configured rules.
    pub(crate) fn of(config: &crate::config::GatewayConfig) -> Pace {
        Pace {
            stalled: config.write_timeout(),
            unsent_bytes: config.slow_unsent_bytes,
            unsent_for: Duration::from_millis(config.slow_unsent_ms),
        }
    }
}

/// Why a write did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The socket broke, or the client went away.
    Gone,
    /// The socket took nothing for [`Pace::stalled`].
    Stalled,
    /// More than [`Pace::unsent_bytes`] stayed unsent for [`Pace::unsent_for`].
    Trickle,
    /// The hub cut the stream meanwhile.
    Cut,
}

impl Failed {
    /// Counts a close the gateway decided (`realtime_connections_closed_total`), and logs it.
    pub(crate) fn record(self, metrics: &Metrics, pace: &Pace) {
        let reason = match self {
            Failed::Stalled => Closed::WriteTimeout,
            Failed::Trickle => Closed::TooSlow,
            Failed::Gone | Failed::Cut => return,
        };
        metrics.closed(reason);
        tracing::debug!(?pace, ?self, "stream client too slow: closed, its cursor stays valid");
    }
}

/// Writes all of `chunk` to `w` under `pace`; `cut` completes if the hub cuts the stream.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    chunk: &Chunk,
    pace: &Pace,
    cut: impl Future<Output = ()>,
) -> Result<(), Failed> {
    let mut cut = std::pin::pin!(cut);
    let mut left = chunk.len();
    // Unsent from here on (the lean path comes here once the socket's buffer is full; the
    // WebSocket with every chunk, most of which the socket takes at once).
    let over_by = Instant::now() + pace.unsent_for;
    let mut at = Progress::default();
    while let Some(slices) = at.slices(chunk.parts()) {
        let over = left > pace.unsent_bytes;
        tokio::select! {
            biased;
            _ = &mut cut => return Err(Failed::Cut),
            written = tokio::time::timeout(pace.stalled, tokio::io::AsyncWriteExt::write_vectored(w, &slices)) => match written {
                // The same rules kept by the socket's own wrapper, where it has one (a WebSocket's
                // upgraded connection: `server.rs`), are the same closes.
                Ok(Err(e)) if service_kit::deadline::TooSlow::is(&e) => return Err(Failed::Trickle),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Failed::Stalled),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Failed::Gone),
                Ok(Ok(n)) => {
                    at.advance(chunk.parts(), n);
                    left -= n;
                }
                Err(_) => return Err(Failed::Stalled),
            },
            _ = tokio::time::sleep_until(over_by), if over => return Err(Failed::Trickle),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::{io::AsyncReadExt, net::TcpStream};

    use super::*;
    use crate::stream::frame::Out;

    /// A connected pair on loopback: the server's end, and the client's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    /// Own bytes, `big` shared bytes, own bytes.
    fn chunk(big: usize) -> Chunk {
        let mut out = Out::default();
        out.buf.extend_from_slice(b"head");
        out.put_shared(Bytes::from(vec![7u8; big]));
        out.buf.extend_from_slice(b"tail");
        out.take()
    }

    const PACE: Pace = Pace {
        stalled: Duration::from_secs(10),
        unsent_bytes: 0,
        unsent_for: Duration::from_secs(10),
    };

    #[tokio::test]
    async fn a_chunk_is_written_whole_and_in_order() {
        let (mut server, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let c = chunk(4 << 20);
        let rest = c.try_write(&server).unwrap();
        if let Some(rest) = rest {
            write(&mut server, &rest, &PACE, std::future::pending()).await.unwrap();
        }
        drop(server);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 8 + (4 << 20));
        assert!(got.starts_with(b"head") && got.ends_with(b"tail"));
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_is_stalled_and_one_that_takes_a_trickle_too_slow() {
        // Takes nothing: no progress for `stalled`.
        let (mut server, _client) = pair().await;
        let pace = Pace {
            stalled: Duration::from_millis(300),
            ..PACE
        };
        let failed = write(&mut server, &chunk(16 << 20), &pace, std::future::pending()).await;
        assert_eq!(failed, Err(Failed::Stalled));

        // Takes 4 KiB every 20 ms: always some progress, but far more than `unsent_bytes` held
        // for longer than `unsent_for`.
        let (mut server, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while client.read(&mut buf).await.is_ok_and(|n| n > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let pace = Pace {
            unsent_for: Duration::from_millis(500),
            ..PACE
        };
        let started = Instant::now();
        let failed = write(&mut server, &chunk(64 << 20), &pace, std::future::pending()).await;
        assert_eq!(failed, Err(Failed::Trickle));
        assert!(started.elapsed() >= pace.unsent_for);
        reader.abort();
    }

    #[tokio::test]
    async fn a_write_waiting_on_a_stream_the_hub_cut_ends_at_once() {
        let (mut server, _client) = pair().await;
        let cut = tokio::time::sleep(Duration::from_millis(100));
        let failed = write(&mut server, &chunk(16 << 20), &PACE, cut).await;
        assert_eq!(failed, Err(Failed::Cut));
    }
}
