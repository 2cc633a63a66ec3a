//! Serving: accept connections, route each by its first bytes (the lean SSE path, WebSocket
//! upgrades, or hyper with the router), and drain on shutdown.

use std::{sync::Arc, time::Duration};

use event_bus::AnyBus;
use service_kit::deadline::Deadline;
use stats_schema::DayStore;
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    app::Built,
    config::GatewayConfig,
    routes::app_with,
    telemetry::metrics::Closed,
    transport::{lean, ws},
};

/// What the all-in-one process adds to a gateway it composes with other services.
#[derive(Default)]
pub struct Extras {
    /// More routes, served as they are (no authentication layer): `make run`'s development pages.
    pub router: Option<axum::Router>,
    /// The Web Push subscriptions, shared with a sinks service in the same process (on the
    /// memory bus there is no other way to share them).
    pub push: Option<notifications::PushStore>,
    /// The state of the sinks' destinations, when the sinks run in this process on the memory
    /// bus (`/api/sinks/destinations` reads Redis otherwise).
    pub sinks_view: Option<crate::app::SinksView>,
    /// The acknowledgements, shared with a sinks service in the same process (on the memory
    /// bus there is no other way to share them).
    pub acks: Option<notifications::acks::AckStore>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras")
            .field("router", &self.router.is_some())
            .field("push", &self.push.is_some())
            .field("sinks_view", &self.sinks_view.is_some())
            .field("acks", &self.acks.is_some())
            .finish()
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then drains: the listener closes,
/// readiness turns false, each stream is served until a random point of
/// `drain_retry_spread_ms` and then ends with a last message and a short `retry:`, and the
/// server returns once they are closed or the grace period is over.
///
/// Connections are served by hyper's HTTP/1 builder directly rather than `axum::serve`, whose
/// HTTP/1-or-2 negotiation costs about 8 KiB per idle connection (`make bench`, idle); SSE
/// needs only HTTP/1.1, and HTTP/2 can be offered by a proxy in front.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stats = DayStore::for_bus(&bus);
    serve_with_stats(listener, config, bus, stats, shutdown).await
}

/// [`serve`], reading the daily statistics from `stats`.
pub async fn serve_with_stats(
    listener: TcpListener,
    config: GatewayConfig,
    bus: AnyBus,
    stats: DayStore,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with(listener, config, bus, stats, Extras::default(), shutdown).await
}

/// [`serve_with_stats`] with what a process that composes services adds ([`Extras`]).
pub async fn serve_with(
    listener: TcpListener,
    config: GatewayConfig,
    bus: AnyBus,
    stats: DayStore,
    extras: Extras,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use hyper_util::rt::TokioIo;
    use tower::Service;

    let grace = Duration::from_millis(config.drain_grace_ms);
    // Dropped (shut down) when serving is over: the drain has waited for its streams.
    let edge = crate::edge::Edge::new(
        crate::edge::threads(config.main_threads, config.edge_threads).1,
        config.edge_nice,
    )?;
    let state = Built::new(config, bus, stats)?
        .with_extras(extras.push, extras.sinks_view, extras.acks)
        .with_edge(edge.shards())
        .start(shutdown.clone())
        .await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, instance = %state.config().instance_id, "sse-gateway listening");
    let router_state = state.clone();
    let router = match extras.router {
        Some(extra) => app_with(state, true).merge(extra),
        None => app_with(state, false),
    };
    let config = router_state.config().clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .max_buf_size(8192)
        .writev(true)
        // From the connection's start, and between two requests on it (hyper 1.12 restarts
        // it for every head).
        .header_read_timeout(config.request_timeout());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Every connection's task, so the drain can wait for lean streams and hyper alike.
    let connections = tokio_util::task::TaskTracker::new();
    // Connections that are no stream: waiting for a request, serving API requests or idle
    // between them, a WebSocket waiting for its `auth` message (`crate::limit::Pending`).
    // Bounded, or silent sockets would use up the file descriptors without ever counting
    // against `max_connections`.
    let pending = Arc::new(Semaphore::new(config.max_pending_connections));
    let state = router_state;
    while let Some((sock, peer)) = service_kit::http::accept(&listener, &shutdown).await {
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            state.metrics().closed(Closed::PendingFull);
            // Never waits: whatever the socket takes at once, then it is closed.
            let _ = sock.try_write(PENDING_FULL);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (router, state, http, watcher) = (router.clone(), state.clone(), http.clone(), graceful.watcher());
        let (edge, tracker) = (edge.pick().clone(), connections.clone());
        connections.spawn(async move {
            let head_by = Instant::now() + state.config().request_timeout();
            // Stream requests take the lean path: no HTTP buffers kept for hours (see `lean`).
            let (lean, websocket) = {
                let mut first = [0u8; 32];
                match tokio::time::timeout_at(head_by, sock.peek(&mut first)).await {
                    Ok(Ok(n)) => (lean::wants(&first[..n]), ws::wants(&first[..n])),
                    Ok(Err(_)) => return,
                    Err(_) => {
                        state.metrics().closed(Closed::RequestTimeout);
                        return;
                    }
                }
            };
            if lean {
                // On an edge thread, with the shard of the hub that feeds it (`crate::edge`).
                on_edge(sock, &edge, &tracker, move |sock| {
                    lean::serve(sock, peer, state, permit, head_by)
                });
                return;
            }
            // Held until the connection ends, or a handler opens a stream on it.
            let pending = crate::limit::Pending::new(permit);
            let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(pending.clone());
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                let mut router = router.clone();
                async move { router.call(req).await }
            });
            // The same two rules as the streams' own write step (`transport/write.rs`).
            let pace = crate::transport::write::Pace::of(state.config());
            let deadline =
                move |sock| Deadline::new(sock, pace.stalled, None).unsent(pace.unsent_bytes, pace.unsent_for);
            if websocket {
                // Upgrades need hyper's upgradeable connection, which the graceful watcher
                // does not take; the session drains itself (close 1012). On an edge thread,
                // like the lean streams: the upgrade spawns the session where it runs.
                drop(watcher);
                on_edge(sock, &edge, &tracker, move |sock| async move {
                    let io = TokioIo::new(deadline(sock));
                    if let Err(e) = http.serve_connection(io, service).with_upgrades().await {
                        tracing::debug!(error = %e, "websocket connection ended with an error");
                    }
                });
                return;
            }
            let io = TokioIo::new(deadline(sock));
            if let Err(e) = watcher.watch(http.serve_connection(io, service)).await {
                if let Some(reason) = too_slow(&e) {
                    state.metrics().closed(reason);
                }
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // No new connection waits in the backlog for a process that will not serve it: refused,
    // a proxy tries the next instance at once.
    drop(listener);
    tracing::info!("draining: readiness is false, streams are told to reconnect elsewhere");
    connections.close();
    state.sessions().close();
    let sessions = state.sessions().clone();
    if tokio::time::timeout(grace, async {
        tokio::join!(graceful.shutdown(), connections.wait(), sessions.wait())
    })
    .await
    .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "drain grace period ran out; exiting anyway"
        );
    }
    Ok(())
}

/// What a connection refused at accept gets (`max_pending_connections`).
const PENDING_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 95\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"code\":\"too_many_pending\",\"message\":\"too many connections have not sent a request yet; retry\"}";

/// Moves an accepted socket to an edge thread's runtime (its registration is the main
/// runtime's) and serves it there with `serve`, tracked with the other connections for the
/// drain.
fn on_edge<F, Fut>(
    sock: tokio::net::TcpStream,
    edge: &tokio::runtime::Handle,
    tracker: &tokio_util::task::TaskTracker,
    serve: F,
) where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(sock) = sock.into_std() else { return };
    let served = async move {
        if let Ok(sock) = tokio::net::TcpStream::from_std(sock) {
            serve(sock).await;
        }
    };
    edge.spawn(tracker.track_future(served));
}

/// Whether hyper's error is a client too slow by a rule of [`Deadline`]: a write that made no
/// progress past its deadline, or bytes left unsent too long.
fn too_slow(e: &hyper::Error) -> Option<Closed> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if service_kit::deadline::TooSlow::is(io) {
                return Some(Closed::TooSlow);
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Some(Closed::WriteTimeout);
            }
        }
        source = s.source();
    }
    None
}

/// Binds `config.http_addr`, connects the bus, and serves until `shutdown`.
pub async fn run(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.bus.redis_url.is_none() {
        tracing::warn!("REDIS_URL is not set: in-process bus, this instance cannot share events with others");
    }
    let bus = event_bus::connect(config.bus_config()).await?;
    let listener = TcpListener::bind(&config.http_addr).await?;
    serve(listener, config, bus, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_refusal_is_a_complete_json_response() {
        let text = std::str::from_utf8(PENDING_FULL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_pending");
    }
}
