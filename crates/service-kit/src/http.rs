//! Serving a small HTTP API (the worker-emitter's webhooks and probes, the stats-aggregator's
//! probes) with every connection bounded ([`Limits`]): so many at once, each request head
//! within a deadline of connecting (and of the previous response), every write within one.
//! `axum::serve` has none of these: a client that sends nothing, or reads nothing, would hold
//! its connection for ever.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::deadline::Deadline;

/// How connections are bounded.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; past it, new ones are closed at accept.
    pub max_connections: usize,
    /// From connecting (or the last response) to a complete request head; also what a
    /// handler allows for a body ([`REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// How long the requests in flight may take to finish after `shutdown`.
    pub drain: Duration,
}

/// The request deadline of [`Limits::default`], for handlers reading a body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            request_timeout: REQUEST_TIMEOUT,
            write_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }
}

/// The next connection, or None once `shutdown` fires. A failed accept (out of file
/// descriptors, say) is logged and retried after a short pause instead of spinning.
pub async fn accept(listener: &TcpListener, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// [`serve_with`] the default [`Limits`].
pub async fn serve(listener: TcpListener, router: axum::Router, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, Limits::default()).await
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish (up to
/// `limits.drain`). Handlers get `ConnectInfo<SocketAddr>`.
pub async fn serve_with(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    while let Some((sock, peer)) = accept(&listener, &shutdown).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            async move { router.call(req).await }
        });
        let conn = http.serve_connection(TokioIo::new(Deadline::new(sock, limits.write_timeout, None)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the drain; exiting anyway");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads until the server closes; false if it is still open after `limit`.
    async fn closed_within(sock: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(limit, async {
            while !matches!(sock.read(&mut buf).await, Ok(0) | Err(_)) {}
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn silent_and_excess_connections_are_closed_and_requests_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let limits = Limits {
            max_connections: 2,
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = tokio::spawn(serve_with(listener, router, shutdown.clone(), limits));
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = ok.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // Two are open: a third is closed at once.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut third, Duration::from_secs(5)).await,
            "over the limit, still open"
        );
        // The silent one, and the idle keep-alive one, are closed at the request deadline.
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "a silent connection stayed"
        );
        assert!(
            closed_within(&mut ok, Duration::from_secs(5)).await,
            "an idle connection stayed"
        );
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
