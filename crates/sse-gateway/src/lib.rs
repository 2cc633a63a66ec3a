//! `sse-gateway`: the stateless SSE service. Many replicas run behind a load balancer with
//! Redis as the shared backplane; browsers connect with `EventSource`.
//!
//! # Layout
//! - [`auth`]: JWT verification (HS256/RS256/ES256/JWKS), token sources, redaction.
//! - [`config`]: [`GatewayConfig`] and the CONTRACT §5 variable names.
//! - [`hub`]: one upstream subscription per process, fanned out to every connection.
//! - [`sse`]: the stream endpoint: resume, replay/live seam, framing, drain.
//! - [`ws`]: the same streams over a WebSocket, with commands (subscribe, mark read, ...).
//! - [`lean`]: stream requests served straight on the socket, without per-connection HTTP buffers.
//! - [`coalesce`]: grouping bursts of one channel and type into one message.
//! - [`api`]: status, connections, publish, test, metrics, healthz, readyz.
//! - [`notify`]: per-user notifications, unread state, the private channel.
//! - [`metrics`]: the Prometheus metrics.
//! - [`figures`]: this instance's figures in Redis on a heartbeat, and the cluster's in `/stats`.
//! - [`dashboard`]: the operator's dashboard at `/` and the JS client module, compiled in.
//! - [`error`]: JSON error answers with stable codes.
//!
//! # Run
//! `REDIS_URL=redis://127.0.0.1:6379 HTTP_ADDR=127.0.0.1:8080 sse-gateway`; without
//! `REDIS_URL` it runs on an in-process bus (one instance only, for development).

pub mod api;
pub mod auth;
pub mod coalesce;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod figures;
pub mod hub;
pub mod lean;
pub mod metrics;
pub mod notify;
pub mod sse;
pub mod ws;

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post},
    Router,
};
use event_bus::{AnyBus, Bus};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{GatewayConfig, ENV_ALIASES};
use hub::{Hub, HubSettings};
use metrics::Metrics;

/// Shared state of one gateway. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    config: GatewayConfig,
    bus: AnyBus,
    hub: Hub,
    metrics: Metrics,
    draining: CancellationToken,
    test_seq: AtomicU64,
    stats: stats_schema::DayStore,
    auth: Arc<auth::Verifier>,
    publish_limiter: api::RateLimiter,
    notifications: Option<notify::Notify>,
}

impl AppState {
    /// Starts the hub on `bus`. `draining` fires when the gateway starts to shut down: readiness
    /// turns false and every stream ends itself.
    pub async fn start(config: GatewayConfig, bus: AnyBus, draining: CancellationToken) -> anyhow::Result<Self> {
        let stats = stats_schema::DayStore::for_bus(&bus);
        Self::start_with_stats(config, bus, stats, draining).await
    }

    /// [`AppState::start`], reading the daily statistics from `stats` (the all-in-one binary
    /// shares its in-process aggregator's store this way).
    pub async fn start_with_stats(
        config: GatewayConfig,
        bus: AnyBus,
        stats: stats_schema::DayStore,
        draining: CancellationToken,
    ) -> anyhow::Result<Self> {
        let verifier = auth::Verifier::new(&config.auth).map_err(|e| anyhow::anyhow!(e))?;
        match verifier.mode() {
            auth::AuthMode::None => tracing::warn!(
                "AUTH_MODE=none: NO AUTHENTICATION. Anyone who can reach this gateway reads every channel, \
                 publishes and administers it. For development only; set AUTH_MODE=jwt with a key in production."
            ),
            auth::AuthMode::Dev => tracing::warn!(
                "AUTH_MODE=dev: GET /api/dev/token hands a signed admin token to ANYONE who asks (the dashboard \
                 takes one there). Tokens are checked as in production, but this server is open. For development \
                 only; set AUTH_MODE=jwt with a key in production."
            ),
            auth::AuthMode::Jwt => {}
        }
        let config_rate = (config.auth.publish_rate_per_sec, config.auth.publish_burst);
        let metrics = Metrics::new(&config.instance_id);
        {
            let bus = bus.clone();
            metrics.register_bus(move || bus.stats().snapshot());
        }
        let notifications = if config.notifications.enabled {
            let private = &config.notifications.channel;
            if !bus.config().channels.iter().any(|c| &c.name == private) {
                anyhow::bail!(
                    "notifications.channel: the bus does not carry {private}; connect it with GatewayConfig::bus_config() \
                     (or set notifications.enabled=false)"
                );
            }
            Some(
                notify::Notify::new(
                    config.notifications.clone(),
                    notifications::AnyStore::for_bus(&bus),
                    bus.clone(),
                )
                .publishing(config.realtime_enabled),
            )
        } else {
            None
        };
        let mut hub_channels = config.public_channels();
        if let Some(n) = &notifications {
            hub_channels.push(n.config().channel.clone());
        }
        let settings = HubSettings {
            channels: hub_channels,
            queue: config.connection_queue,
            max_connections: config.max_connections,
            max_per_client: config.max_connections_per_client,
            latest_wins: config.latest_wins_channels.clone(),
            max_collapsed: config.max_collapsed,
            heartbeat: config.heartbeat(),
        };
        let hub = Hub::start(&bus, settings, metrics.clone(), draining.clone()).await?;
        let state = AppState {
            inner: Arc::new(StateInner {
                config,
                bus,
                hub,
                metrics,
                draining,
                test_seq: AtomicU64::new(1),
                stats,
                auth: Arc::new(verifier),
                publish_limiter: api::RateLimiter::new(config_rate.0, config_rate.1),
                notifications,
            }),
        };
        let interval = Duration::from_millis(state.config().figures_interval_ms);
        tokio::spawn(figures::heartbeat(state.clone(), interval, state.draining().clone()));
        Ok(state)
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }
    /// The bus.
    pub fn bus(&self) -> &AnyBus {
        &self.inner.bus
    }
    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }
    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    /// Publishing limits per caller.
    pub fn publish_limiter(&self) -> &api::RateLimiter {
        &self.inner.publish_limiter
    }
    /// Per-user notifications, when on.
    pub fn notifications(&self) -> Option<&notify::Notify> {
        self.inner.notifications.as_ref()
    }
    /// The token verifier.
    pub fn auth(&self) -> &auth::Verifier {
        &self.inner.auth
    }
    /// Where the daily statistics are read.
    pub fn stats_store(&self) -> &stats_schema::DayStore {
        &self.inner.stats
    }
    /// Fires when draining starts.
    pub fn draining(&self) -> &CancellationToken {
        &self.inner.draining
    }
    fn next_test(&self) -> u64 {
        self.inner.test_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The router: every endpoint of CONTRACT §3 and §4.
pub fn app(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    Router::new()
        .route("/api/realtime/events", get(sse::events))
        .route("/api/realtime/status", get(api::status))
        .route("/api/realtime/connections", get(api::connections))
        .route("/api/realtime/stats", get(figures::stats))
        .route("/api/realtime/stats/range", get(figures::range))
        .route("/api/realtime/publish", post(api::publish))
        .route("/api/realtime/test", post(api::test_event))
        .route("/api/notifications", get(notify::list).post(notify::create))
        .route("/api/notifications/read-all", post(notify::read_all))
        .route("/api/notifications/{id}/read", post(notify::read_one))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .layer(axum::middleware::from_fn_with_state(state.clone(), api::require_auth))
        .route("/api/dev/token", get(api::dev_token))
        // Authenticates itself: the token may come in the first message.
        .route("/api/realtime/ws", get(ws::upgrade))
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` fires, then drains: readiness turns false, each
/// stream gets a last message with a jittered `retry:` and ends, and the server returns once
/// they are closed or the grace period is over.
///
/// Connections are served by hyper's HTTP/1 builder directly rather than `axum::serve`, whose
/// HTTP/1-or-2 negotiation costs about 8 KiB per idle connection (shared/PERFORMANCE.md); SSE
/// needs only HTTP/1.1, and HTTP/2 can be offered by a proxy in front.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stats = stats_schema::DayStore::for_bus(&bus);
    serve_with_stats(listener, config, bus, stats, shutdown).await
}

/// [`serve`], reading the daily statistics from `stats`.
pub async fn serve_with_stats(
    listener: TcpListener,
    config: GatewayConfig,
    bus: AnyBus,
    stats: stats_schema::DayStore,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use hyper_util::rt::TokioIo;
    use tower::Service;

    let grace = Duration::from_millis(config.drain_grace_ms);
    let state = AppState::start_with_stats(config, bus, stats, shutdown.clone()).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, instance = %state.config().instance_id, "sse-gateway listening");
    let router_state = state.clone();
    let router = app(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .max_buf_size(8192)
        .writev(true)
        .header_read_timeout(Duration::from_secs(30));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Every connection's task, so the drain can wait for lean streams and hyper alike.
    let connections = tokio_util::task::TaskTracker::new();
    let state = router_state;
    loop {
        let (sock, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = sock.set_nodelay(true);
        let (router, state, http, watcher) = (router.clone(), state.clone(), http.clone(), graceful.watcher());
        connections.spawn(async move {
            // Stream requests take the lean path: no HTTP buffers kept for hours (see `lean`).
            let (lean, websocket) = {
                let mut first = [0u8; 32];
                match tokio::time::timeout(Duration::from_secs(30), sock.peek(&mut first)).await {
                    Ok(Ok(n)) => (lean::wants(&first[..n]), ws::wants(&first[..n])),
                    _ => return, // silent or broken client
                }
            };
            if lean {
                return lean::serve(sock, peer, state).await;
            }
            let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                let mut router = router.clone();
                async move { router.call(req).await }
            });
            if websocket {
                // Upgrades need hyper's upgradeable connection, which the graceful watcher
                // does not take; the session drains itself (close 1012).
                drop(watcher);
                if let Err(e) = http.serve_connection(TokioIo::new(sock), service).with_upgrades().await {
                    tracing::debug!(error = %e, "websocket connection ended with an error");
                }
                return;
            }
            if let Err(e) = watcher.watch(http.serve_connection(TokioIo::new(sock), service)).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("draining: readiness is false, streams are told to reconnect elsewhere");
    connections.close();
    if tokio::time::timeout(grace, async { tokio::join!(graceful.shutdown(), connections.wait()) })
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

/// Binds `config.http_addr`, connects the bus, and serves until `shutdown`.
pub async fn run(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.bus.redis_url.is_none() {
        tracing::warn!("REDIS_URL is not set: in-process bus, this instance cannot share events with others");
    }
    let bus = event_bus::connect(config.bus_config()).await?;
    let listener = TcpListener::bind(&config.http_addr).await?;
    serve(listener, config, bus, shutdown).await
}
