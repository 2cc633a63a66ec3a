//! The gateway's shared state: built from its configuration (checked, nothing running), then
//! started (the hub subscribes upstream and fans out; the figures heartbeat begins).

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use event_bus::{AnyBus, Broker};
use stats_schema::DayStore;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{config::AuthMode, jwt::Verifier},
    config::GatewayConfig,
    hub::fan_out::{Hub, HubSettings},
    limit::RateLimiter,
    telemetry::{figures, metrics::Metrics},
};

/// The gateway's notifications: over its bus, in the store that goes with it.
pub type Notify = notifications::Notifications<AnyBus>;

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
    /// `/api/openapi.json`, built at the first request.
    openapi: std::sync::OnceLock<bytes::Bytes>,
    stats: DayStore,
    auth: Arc<Verifier>,
    publish_limiter: RateLimiter,
    resume_limiter: RateLimiter,
    notifications: Option<Notify>,
    /// Browsers' Web Push subscriptions (stored next to the notifications).
    push: notifications::PushStore,
    /// The sinks' destinations, from a sinks service in this process.
    sinks_view: Option<SinksView>,
    /// Who saw and who acknowledged which event.
    acks: notifications::acks::AckStore,
    /// Who is connected, across every gateway.
    presence: crate::presence::Presence,
    /// The hub follows the bus until the last holder of the state is gone: through the drain,
    /// so streams still open are served to the end.
    _hub_stop: tokio_util::sync::DropGuard,
    /// WebSocket sessions, which outlive the connection task that upgraded them: the drain
    /// waits for them too.
    sessions: tokio_util::task::TaskTracker,
}

/// The state of the sinks' destinations and escalations, as `/api/sinks/destinations` lists
/// them (`{destinations, escalations}`), from a sinks service in the same process.
#[derive(Clone)]
pub struct SinksView(pub Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for SinksView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinksView")
    }
}

/// A gateway built from its configuration: keys loaded, metrics registered, notifications
/// set up, and nothing running yet. [`Built::start`] starts it.
#[derive(Debug)]
pub struct Built {
    config: GatewayConfig,
    bus: AnyBus,
    stats: DayStore,
    verifier: Verifier,
    metrics: Metrics,
    notifications: Option<Notify>,
    hub: HubSettings,
    push: Option<notifications::PushStore>,
    sinks_view: Option<SinksView>,
    acks: Option<notifications::acks::AckStore>,
}

impl Built {
    /// Builds a gateway over `bus`, reading the daily statistics from `stats`; an error names
    /// what is wrong with the configuration.
    pub fn new(config: GatewayConfig, bus: AnyBus, stats: DayStore) -> anyhow::Result<Built> {
        let verifier = Verifier::new(&config.auth).map_err(|e| anyhow::anyhow!(e))?;
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
            let store = notifications::AnyStore::for_bus(&bus);
            Some(Notify::new(config.notifications.clone(), store, bus.clone()).publishing(config.realtime_enabled))
        } else {
            None
        };
        let mut channels = config.public_channels();
        if let Some(n) = &notifications {
            channels.push(n.config().channel.clone());
        }
        let hub = HubSettings {
            channels,
            on_demand: config.subscriptions_on_demand,
            follow_grace: Duration::from_millis(config.follow_grace_ms),
            queue: config.connection_queue,
            max_connections: config.max_connections,
            max_per_client: config.max_connections_per_client,
            latest_wins: config.latest_wins_channels.clone(),
            max_collapsed: config.max_collapsed,
            heartbeat: config.heartbeat(),
            edge: None,
        };
        Ok(Built {
            config,
            bus,
            stats,
            verifier,
            metrics,
            notifications,
            hub,
            push: None,
            sinks_view: None,
            acks: None,
        })
    }

    /// Uses `push` for the Web Push subscriptions (else the bus' own), `sinks_view` for the
    /// sinks' destinations (else Redis) and `acks` for the acknowledgements (else the bus' own).
    pub fn with_extras(
        mut self,
        push: Option<notifications::PushStore>,
        sinks_view: Option<SinksView>,
        acks: Option<notifications::acks::AckStore>,
    ) -> Built {
        self.push = push;
        self.sinks_view = sinks_view;
        self.acks = acks;
        self
    }

    /// Runs the hub's fan-out on each of `edge`'s shards, for the streams there (`crate::edge`).
    pub fn with_edge(mut self, edge: crate::edge::Shards) -> Built {
        self.hub.edge = Some(edge);
        self
    }

    /// Starts the hub on the bus and the figures heartbeat. `draining` fires when the gateway
    /// starts to shut down: readiness turns false and every stream ends itself, served by the
    /// hub until then (the hub stops once the state is dropped).
    pub async fn start(self, draining: CancellationToken) -> anyhow::Result<AppState> {
        match self.verifier.mode() {
            AuthMode::None => tracing::warn!(
                "AUTH_MODE=none: NO AUTHENTICATION. Anyone who can reach this gateway reads every channel, \
                 publishes and administers it. For development only; set AUTH_MODE=jwt with a key in production."
            ),
            AuthMode::Dev => tracing::warn!(
                "AUTH_MODE=dev: GET /api/dev/token hands a signed admin token to ANYONE who asks (the dashboard \
                 takes one there). Tokens are checked as in production, but this server is open. For development \
                 only; set AUTH_MODE=jwt with a key in production."
            ),
            AuthMode::Jwt => {}
        }
        let hub_stop = CancellationToken::new();
        let hub = Hub::start(&self.bus, self.hub, self.metrics.clone(), hub_stop.clone()).await?;
        // The drain reaches each live stream through its queue (`Hub::drain`).
        tokio::spawn({
            let (hub, draining, stop) = (hub.clone(), draining.clone(), hub_stop.clone());
            async move {
                tokio::select! {
                    _ = draining.cancelled() => hub.drain(),
                    _ = stop.cancelled() => {}
                }
            }
        });
        let auth = &self.config.auth;
        let publish_limiter = RateLimiter::new(auth.publish_rate_per_sec, auth.publish_burst);
        let resume_limiter = RateLimiter::new(self.config.resume_rate_per_sec, self.config.resume_burst);
        let state = AppState {
            inner: Arc::new(StateInner {
                push: self
                    .push
                    .unwrap_or_else(|| notifications::PushStore::for_bus(&self.bus)),
                sinks_view: self.sinks_view,
                acks: self
                    .acks
                    .unwrap_or_else(|| notifications::acks::AckStore::for_bus(&self.bus)),
                presence: crate::presence::Presence::for_bus(&self.bus),
                config: self.config,
                bus: self.bus,
                hub,
                metrics: self.metrics,
                draining,
                test_seq: AtomicU64::new(1),
                openapi: std::sync::OnceLock::new(),
                stats: self.stats,
                auth: Arc::new(self.verifier),
                publish_limiter,
                resume_limiter,
                notifications: self.notifications,
                _hub_stop: hub_stop.drop_guard(),
                sessions: tokio_util::task::TaskTracker::new(),
            }),
        };
        if state.config().presence_interval_ms > 0 {
            tokio::spawn(crate::presence::run(
                state.presence().clone(),
                state.hub().clone(),
                state.config().instance_id.clone(),
                state.notifications().map(|n| n.config().channel.as_str().to_owned()),
                Duration::from_millis(state.config().presence_interval_ms),
                state.draining().clone(),
            ));
        }
        let interval = Duration::from_millis(state.config().figures_interval_ms);
        tokio::spawn(figures::heartbeat(
            state.bus().clone(),
            state.metrics().clone(),
            state.hub().clone(),
            state.config().instance_id.clone(),
            interval,
            state.config().shed_above_fair_share,
            state.draining().clone(),
        ));
        Ok(state)
    }
}

impl AppState {
    /// Builds and starts a gateway on `bus` (see [`Built`]), reading the daily statistics
    /// where the bus keeps them.
    pub async fn start(config: GatewayConfig, bus: AnyBus, draining: CancellationToken) -> anyhow::Result<Self> {
        let stats = DayStore::for_bus(&bus);
        Built::new(config, bus, stats)?.start(draining).await
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
    pub fn publish_limiter(&self) -> &RateLimiter {
        &self.inner.publish_limiter
    }
    /// Limits of resuming stream opens per client.
    pub fn resume_limiter(&self) -> &RateLimiter {
        &self.inner.resume_limiter
    }
    /// Per-user notifications, when on.
    pub fn notifications(&self) -> Option<&Notify> {
        self.inner.notifications.as_ref()
    }
    /// Browsers' Web Push subscriptions.
    pub fn push(&self) -> &notifications::PushStore {
        &self.inner.push
    }
    /// The sinks' destinations, when a sinks service runs in this process.
    pub fn sinks_view(&self) -> Option<&SinksView> {
        self.inner.sinks_view.as_ref()
    }
    /// Who saw and who acknowledged which event.
    pub fn acks(&self) -> &notifications::acks::AckStore {
        &self.inner.acks
    }
    /// Who is connected, across every gateway.
    pub fn presence(&self) -> &crate::presence::Presence {
        &self.inner.presence
    }
    /// The token verifier.
    pub fn auth(&self) -> &Verifier {
        &self.inner.auth
    }
    /// Where the daily statistics are read.
    pub fn stats_store(&self) -> &DayStore {
        &self.inner.stats
    }
    /// The WebSocket sessions (see the field).
    pub fn sessions(&self) -> &tokio_util::task::TaskTracker {
        &self.inner.sessions
    }

    /// Fires when draining starts.
    pub fn draining(&self) -> &CancellationToken {
        &self.inner.draining
    }
    /// The OpenAPI document of this gateway (with its cookie name), built once.
    pub fn openapi(&self) -> bytes::Bytes {
        self.inner
            .openapi
            .get_or_init(|| {
                let config = &self.inner.config;
                let private = self.notifications().map(|n| n.config().channel.as_str());
                let channels: Vec<(&str, Vec<&str>)> = config
                    .bus
                    .channels
                    .iter()
                    .filter(|c| Some(c.name.as_str()) != private)
                    .map(|c| (c.name.as_str(), c.types.iter().map(|t| t.as_str()).collect()))
                    .collect();
                crate::openapi::document(&config.auth.cookie_name, &channels)
                    .to_string()
                    .into()
            })
            .clone()
    }

    /// A fresh number for a test event.
    pub fn next_test(&self) -> u64 {
        self.inner.test_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_checks_without_starting_anything() {
        let bus = AnyBus::Memory(event_bus::MemoryBus::new(event_bus::BusConfig::default()).unwrap());
        // The bus does not carry the private channel: refused, naming the key.
        let err = Built::new(GatewayConfig::default(), bus.clone(), DayStore::for_bus(&bus)).unwrap_err();
        assert!(
            err.to_string().starts_with("auth.mode") || err.to_string().starts_with("notifications.channel"),
            "{err}"
        );
        let config = GatewayConfig {
            auth: crate::auth::config::AuthConfig {
                mode: AuthMode::None,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = Built::new(config.clone(), bus.clone(), DayStore::for_bus(&bus)).unwrap_err();
        assert!(err.to_string().starts_with("notifications.channel"), "{err}");
        let bus = AnyBus::Memory(event_bus::MemoryBus::new(config.bus_config()).unwrap());
        let built = Built::new(config, bus.clone(), DayStore::for_bus(&bus)).unwrap();
        assert!(built.notifications.is_some());
        assert!(built.hub.channels.iter().any(|c| c.as_str() == "notifications"));
    }
}
