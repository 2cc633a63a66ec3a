//! The all-in-one process for `make run`: the bus (memory unless `REDIS_URL` is set), the
//! gateway on it, and a demo source that simulates a shop.
//!
//! # Layout
//! - [`Config`]: the process configuration (the documented variable names as aliases).
//! - [`demo`]: the demo source: orders arriving, stock going out and coming back, prices
//!   moving, listings changing state, with an occasional burst.
//! - the stats-aggregator runs inside (`STATS_ENABLED`, default on), so `/api/realtime/stats`
//!   has today's numbers in memory mode too.
//! - `pipeline` (feature `worker`, on by default): on Redis, the worker-emitter's processors
//!   run inside (`WORKER_ENABLED`, default on) and the demo shop enqueues BullMQ jobs for them.
//! - [`dev_sinks`] (`SINKS_ENABLED`, default on): the sinks inside, routing to development
//!   destinations in this process, with the page `/dev/sinks` that shows what each received.
//! - [`run`]: starts everything and returns when the shutdown token fires.

pub mod demo;
pub mod dev_sinks;
#[cfg(feature = "worker")]
pub mod pipeline;

use serde::{Deserialize, Serialize};
use sse_gateway::GatewayConfig;
use tokio_util::sync::CancellationToken;

/// The most waiting and decided escalations the dashboard lists per route.
const PANEL_ROWS: usize = 20;

/// The all-in-one configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gateway, and inside it the bus.
    pub gateway: GatewayConfig,
    /// Run the demo source.
    pub demo: bool,
    /// Demo events per second, on average.
    pub demo_rate: f64,
    /// Run the stats-aggregator in this process (its store: this process on the memory bus,
    /// Redis otherwise). `false` when separate aggregator processes do it.
    pub stats: bool,
    /// On Redis, run the worker-emitter's processors in this process (their defaults: queues
    /// `inventory`, `orders`, `pricing`, `listings`, prefix `bull`), and have the demo shop
    /// enqueue jobs for them. `false` when separate worker-emitters take the jobs.
    pub worker: bool,
    /// Run the sinks in this process, to development destinations in this process (their page:
    /// `/dev/sinks`). `false` when a separate sinks service delivers.
    pub sinks: bool,
    /// How long a stock-out waits for an acknowledgement on a dashboard before it goes to LINE
    /// (the development sinks' escalating route), ms.
    pub escalate_after_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway: GatewayConfig {
                http_addr: "127.0.0.1:8080".into(),
                // `make run` is for development: real tokens, handed out to whoever asks at
                // /api/dev/token (the dashboard takes one there), and the gateway says so loudly.
                auth: sse_gateway::auth::AuthConfig {
                    mode: sse_gateway::auth::AuthMode::Dev,
                    ..Default::default()
                },
                ..Default::default()
            },
            demo: false,
            demo_rate: 2.0,
            stats: true,
            worker: true,
            sinks: true,
            escalate_after_ms: 60_000,
        }
    }
}

/// The documented variable names (`docs/reference.md`, "Configuration") and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("HTTP_ADDR", "gateway.http_addr"),
    ("REDIS_URL", "gateway.bus.redis_url"),
    ("INSTANCE_ID", "gateway.instance_id"),
    ("REALTIME_PREFIX", "gateway.bus.prefix"),
    ("REALTIME_ENABLED", "gateway.realtime_enabled"),
    ("SSE_HEARTBEAT_INTERVAL", "gateway.heartbeat_interval_ms"),
    ("SSE_DEBOUNCE_WINDOW", "gateway.debounce_window_ms"),
    ("AUTH_MODE", "gateway.auth.mode"),
    ("JWT_HS256_SECRET", "gateway.auth.hs256_secret"),
    ("JWT_PUBLIC_KEY_FILE", "gateway.auth.public_key_file"),
    ("JWT_JWKS_FILE", "gateway.auth.jwks_file"),
    ("DEMO", "demo"),
    ("DEMO_RATE", "demo_rate"),
    ("STATS_ENABLED", "stats"),
    ("WORKER_ENABLED", "worker"),
    ("SINKS_ENABLED", "sinks"),
    ("SINKS_ESCALATE_MS", "escalate_after_ms"),
];

impl Config {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.gateway.validate().map_err(|e| format!("gateway.{e}"))?;
        if !(1_000..=86_400_000).contains(&self.escalate_after_ms) {
            return Err(format!(
                "escalate_after_ms (SINKS_ESCALATE_MS): {} is outside 1000..=86400000",
                self.escalate_after_ms
            ));
        }
        if !(self.demo_rate > 0.0 && self.demo_rate <= 10_000.0) {
            return Err(format!(
                "demo_rate (DEMO_RATE): {} is outside (0, 10000]",
                self.demo_rate
            ));
        }
        Ok(())
    }
}

/// Runs the process until `shutdown` fires, then drains the gateway.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.gateway.http_addr).await?;
    let addr = listener.local_addr()?;
    let dev = if config.sinks {
        Some(dev_sinks::DevSinks::prepare(
            &mut config.gateway,
            addr.port(),
            config.escalate_after_ms,
        )?)
    } else {
        None
    };
    let bus = event_bus::connect(config.gateway.bus_config()).await?;
    let backend = match &bus {
        event_bus::AnyBus::Memory(_) => "in-memory bus".to_owned(),
        event_bus::AnyBus::Redis(_) => format!(
            "redis at {}",
            event_bus::redact_url(config.gateway.bus.redis_url.as_deref().unwrap_or(""))
        ),
    };
    let on_redis = matches!(bus, event_bus::AnyBus::Redis(_));
    let (jobs, workers) = pipeline(&config, &bus, on_redis).await?;
    tracing::info!(%backend, demo = config.demo, worker = workers.is_some(), "rakuda-realtime on http://{addr}  (stream: http://{addr}/api/realtime/events)");
    if config.demo {
        // Stock-outs also notify the development user, through the gateway's own API (with a
        // dev token in AUTH_MODE=dev, open in none; with jwt the demo has no token and leaves
        // notifications alone).
        let notify = (config.gateway.notifications.enabled
            && config.gateway.auth.mode != sse_gateway::auth::AuthMode::Jwt)
            .then(|| format!("http://{addr}"));
        let output = match jobs {
            Some(queues) => demo::Output::Jobs(queues),
            None => demo::Output::Bus(bus.clone()),
        };
        tokio::spawn(demo::run(output, config.demo_rate, notify, shutdown.clone()));
    }
    let store = stats_aggregator::Store::for_bus(&bus);
    let aggregator = config.stats.then(|| {
        let settings = stats_aggregator::AggregatorConfig {
            http_addr: config.gateway.http_addr.clone(),
            instance_id: config.gateway.instance_id.clone(),
            bus: config.gateway.bus.clone(),
            ..Default::default()
        };
        let a = stats_aggregator::Aggregator::new(bus.clone(), store.clone(), settings);
        tokio::spawn(a.run(shutdown.clone()))
    });
    let mut extras = sse_gateway::Extras::default();
    let mut sinks_task = None;
    if let Some(dev) = dev {
        let push = notifications::PushStore::for_bus(&bus);
        // One store of acknowledgements for the gateway and the sinks (on the memory bus there
        // is no other way to share them).
        let acks = notifications::acks::AckStore::for_bus(&bus);
        extras.acks = Some(acks.clone());
        let sinks_store = match &bus {
            event_bus::AnyBus::Memory(_) => {
                let memory = sinks::store::MemoryStore::new(push.clone());
                let view = memory.clone();
                extras.sinks_view = Some(sse_gateway::app::SinksView(std::sync::Arc::new(
                    move || serde_json::json!({"destinations": view.view(), "escalations": view.held().panel(PANEL_ROWS)}),
                )));
                sinks::store::Store::Memory(memory)
            }
            event_bus::AnyBus::Redis(_) => sinks::store_of(&bus)?,
        };
        extras.push = Some(push);
        extras.router = Some(dev.router());
        tracing::info!("outbound sinks to development destinations: http://{addr}/dev/sinks");
        sinks_task = Some(tokio::spawn(sinks::run_on(
            dev.config.clone(),
            bus.clone(),
            sinks_store,
            acks,
            None,
            shutdown.clone(),
        )));
    }
    sse_gateway::serve_with(listener, config.gateway, bus, store.days(), extras, shutdown).await?;
    if let Some(s) = sinks_task {
        s.await??;
    }
    if let Some(w) = workers {
        w.stop().await;
    }
    if let Some(a) = aggregator {
        a.await?;
    }
    Ok(())
}

/// The worker-emitter's processors, and the demo's queues, when the bus is Redis and
/// `worker` is on.
#[cfg(feature = "worker")]
async fn pipeline(
    config: &Config,
    bus: &event_bus::AnyBus,
    on_redis: bool,
) -> anyhow::Result<(Option<pipeline::Queues>, Option<worker_emitter::Workers>)> {
    if !(on_redis && config.worker) {
        return Ok((None, None));
    }
    let settings = pipeline::settings(&config.gateway);
    let workers = worker_emitter::Workers::start(bus.clone(), &settings).await?;
    let queues = if config.demo {
        Some(pipeline::Queues::open(&settings).await?)
    } else {
        None
    };
    Ok((queues, Some(workers)))
}

/// Built without the `worker` feature: the demo publishes to the bus itself.
#[cfg(not(feature = "worker"))]
async fn pipeline(
    config: &Config,
    _bus: &event_bus::AnyBus,
    on_redis: bool,
) -> anyhow::Result<(Option<demo::NoQueues>, Option<demo::NoWorkers>)> {
    if on_redis && config.worker {
        tracing::warn!(
            "built without the worker feature: no processors run here (make run with REDIS_URL builds them)"
        );
    }
    Ok((None, None))
}
