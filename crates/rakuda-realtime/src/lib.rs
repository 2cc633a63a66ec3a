//! The all-in-one process for `make run`: the bus (memory unless `REDIS_URL` is set), a demo
//! source that simulates a shop, and the services composed on top of it.
//!
//! # Layout
//! - [`Config`]: the process configuration (CONTRACT §5 names as aliases).
//! - [`demo`]: the demo source: orders arriving, stock going out and coming back, prices
//!   moving, listings changing state, with an occasional burst.
//! - [`run`]: starts everything and returns when the shutdown token fires.
//!
//! The gateway (SSE + dashboard) joins here with its own issue; until then the process prints
//! every event it sees, so `make run` shows the bus working end to end.

pub mod demo;

use std::io::Write;

use event_bus::{Bus, BusConfig, Delivery};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The all-in-one configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address of the HTTP side (used once the gateway is composed in).
    pub http_addr: String,
    /// Run the demo source.
    pub demo: bool,
    /// Demo events per second, on average.
    pub demo_rate: f64,
    /// The bus.
    pub bus: BusConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: "127.0.0.1:8080".into(),
            demo: false,
            demo_rate: 2.0,
            bus: BusConfig::default(),
        }
    }
}

/// CONTRACT §5 variable names and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("HTTP_ADDR", "http_addr"),
    ("REDIS_URL", "bus.redis_url"),
    ("REALTIME_PREFIX", "bus.prefix"),
    ("DEMO", "demo"),
    ("DEMO_RATE", "demo_rate"),
];

impl Config {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.bus
            .validate()
            .map_err(|e| format!("bus.{}: {}", e.key, e.message))?;
        if !(self.demo_rate > 0.0 && self.demo_rate <= 10_000.0) {
            return Err(format!("demo_rate: {} is outside (0, 10000]", self.demo_rate));
        }
        Ok(())
    }
}

/// Runs the process until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = event_bus::connect(config.bus.clone()).await?;
    let backend = match &bus {
        event_bus::AnyBus::Memory(_) => "memory".to_owned(),
        event_bus::AnyBus::Redis(_) => format!("redis ({})", config.bus.redis_url.as_deref().unwrap_or("")),
    };
    tracing::info!(%backend, demo = config.demo, "rakuda-realtime started; printing every event");
    let channels = config.bus.channel_names();
    let mut sub = bus.subscribe(&channels, None).await?;
    if config.demo {
        tokio::spawn(demo::run(bus.clone(), config.demo_rate, shutdown.clone()));
    }
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = sub.next() => match d {
                Some(Delivery::Event(e)) => e.to_json(),
                Some(Delivery::Resync { channel, .. }) => format!("{{\"type\":\"RESYNC\",\"channel\":\"{channel}\"}}"),
                None => break,
            },
        };
        // stdout closed (piped into `head`, say): stop quietly rather than panic.
        if writeln!(std::io::stdout().lock(), "{line}").is_err() {
            break;
        }
    }
    tracing::info!(published = bus.stats().snapshot().published, "stopped");
    Ok(())
}
