//! Gateway configuration (`docs/reference.md`, "Configuration"): defaults, `CONFIG_FILE`, then the environment.

use std::time::Duration;

use event_bus::BusConfig;
pub use notifications::NotificationsConfig;
use serde::{Deserialize, Serialize};

/// Everything the gateway reads at start-up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listen address (`HTTP_ADDR`).
    pub http_addr: String,
    /// This replica's name (`INSTANCE_ID`; default: the host name).
    pub instance_id: String,
    /// `REALTIME_ENABLED=false`: the stream endpoint answers 503 and publishing is a no-op.
    pub realtime_enabled: bool,
    /// Heartbeat comment interval in ms (`SSE_HEARTBEAT_INTERVAL`).
    pub heartbeat_interval_ms: u64,
    /// Grouping window in ms (`SSE_DEBOUNCE_WINDOW`); 0 sends every event on its own.
    pub debounce_window_ms: u64,
    /// Most events in one grouped message; a longer burst becomes several messages.
    pub max_group: usize,
    /// The most a browser waits before reconnecting when its stream breaks, in ms: each
    /// stream opens with a `retry:` between half and all of it.
    pub retry_ms: u64,
    /// On drain, each stream ends at a random point within this window, still served until
    /// then, and reconnects at once; other ends wait `retry_ms` plus a random share of it.
    /// Either way clients do not come back in one wave.
    pub drain_retry_spread_ms: u64,
    /// How long a drain may take before the process exits anyway, in ms.
    pub drain_grace_ms: u64,
    /// Events queued per connection; past it the stream catches up from the store in place.
    pub connection_queue: usize,
    /// Follow a channel upstream only while a stream of this instance needs it (from its first
    /// stream on, until `follow_grace_ms` after its last); off, every channel is followed from
    /// the start.
    pub subscriptions_on_demand: bool,
    /// How long a channel no stream needs any more is still followed, in ms: a client that
    /// reconnects within it finds it followed.
    pub follow_grace_ms: u64,
    /// An instance holding more than this times its fair share of the streams (every
    /// instance's count over the instances, from their figures) sheds the streams above its
    /// share (2 or more), a tenth of its streams per figures beat at most, each told to reconnect through
    /// the load balancer as on a drain; 0 never sheds.
    pub shed_above_fair_share: f64,
    /// Open streams allowed in this process; past it, 503 with `Retry-After`.
    pub max_connections: usize,
    /// Open streams allowed per client (its user; its IP in `AUTH_MODE=none`); past it,
    /// 429 with `Retry-After`.
    pub max_connections_per_client: usize,
    /// Take the client's IP from the first `X-Forwarded-For` entry (only behind a proxy that
    /// sets it; otherwise clients could choose their own).
    pub trust_forwarded_for: bool,
    /// With `trust_forwarded_for`: how many proxies in front of the gateway append to
    /// `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for` appends the address it saw). The
    /// client is the entry this many from the right; what a client wrote itself stands further
    /// left and is never taken.
    pub trusted_proxy_hops: usize,
    /// Channels whose events are states (the latest value per entity is what matters): a client
    /// that lags gets the latest per entity instead of being cut.
    pub latest_wins_channels: Vec<event_bus::Channel>,
    /// Entities one lagging client may have put aside before it is cut anyway.
    pub max_collapsed: usize,
    /// How often this instance writes its figures to `rakuda:realtime:gateway:<instance>`, in
    /// ms; they expire after three missed beats.
    pub figures_interval_ms: u64,
    /// How often this instance announces who is connected to it (`crate::presence`), in ms; 0:
    /// presence off. An instance's announcement expires after three intervals.
    pub presence_interval_ms: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A write to a client that makes no progress for this long closes the connection (its
    /// cursor stays valid), in ms: a client that stops reading holds nothing for long.
    pub write_timeout_ms: u64,
    /// A stream client that leaves more than this many bytes of a write unsent (0: any; a
    /// write waits only once the kernel's buffer for the socket is full)...
    pub slow_unsent_bytes: usize,
    /// ... for longer than this, in ms, is closed (its cursor stays valid): a client that
    /// takes a trickle is not written to for ever.
    pub slow_unsent_ms: u64,
    /// From accepting a connection to its complete request head, and for a request body,
    /// in ms; also the longest idle wait between two requests on one connection.
    pub request_timeout_ms: u64,
    /// Connections that are no stream (not yet sent a request, serving API requests or idle
    /// between them, a WebSocket waiting for its `auth` message); past it, new ones are
    /// refused at once (503), so sockets without credentials cannot use up file descriptors.
    pub max_pending_connections: usize,
    /// A WebSocket session with no stream (refused, or everything unsubscribed) is closed
    /// after this long, in ms.
    pub ws_streamless_ms: u64,
    /// Threads of the edge, which run the streams and the hub's fan-out apart from the rest
    /// (publishing, the router, the Redis clients), so a fan-out never starves a publish; each
    /// is a single-threaded runtime with its own share of the connections and its own fan-out
    /// (`crate::edge`); 0: the CPUs less the main runtime's workers, at least one.
    pub edge_threads: usize,
    /// Worker threads of the main runtime: the HTTP API, publishing, the router and the Redis
    /// clients (the streams run on the edge); 0: one per four CPUs, at least one. Each worker
    /// more is one more thread to wake per request: on few CPUs, one costs least.
    pub main_threads: usize,
    /// How much lower the edge threads run than the main runtime, in nice steps (0..=19; 0:
    /// the same): while both have work, the kernel gives the CPU to a publish, a Redis reply or
    /// an API request before a fan-out, which takes up the rest (`crate::edge`).
    pub edge_nice: u8,
    /// Stream opens with a cursor one client may make per second, sustained: each replays
    /// from the bus, so reconnecting in a loop with an old cursor is bounded work.
    pub resume_rate_per_sec: f64,
    /// Stream opens with a cursor one client may make at once.
    pub resume_burst: f64,
    /// Origins (`https://host[:port]`) besides the gateway's own that may open a WebSocket
    /// or send a cookie-authenticated state-changing request; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Authentication (`AUTH_MODE`, `JWT_HS256_SECRET`, `JWT_PUBLIC_KEY_FILE`, `JWT_JWKS_FILE`).
    pub auth: crate::auth::AuthConfig,
    /// Per-user notifications and their private channel.
    pub notifications: NotificationsConfig,
    /// The bus (`REDIS_URL`, `REALTIME_PREFIX`, channels, retention).
    pub bus: BusConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            http_addr: "0.0.0.0:8080".into(),
            instance_id: default_instance(),
            realtime_enabled: true,
            heartbeat_interval_ms: 30_000,
            debounce_window_ms: 500,
            max_group: 500,
            retry_ms: 500,
            drain_retry_spread_ms: 5_000,
            drain_grace_ms: 20_000,
            connection_queue: 16_384,
            subscriptions_on_demand: true,
            follow_grace_ms: 30_000,
            shed_above_fair_share: 0.0,
            max_connections: 20_000,
            max_connections_per_client: 100,
            trust_forwarded_for: false,
            trusted_proxy_hops: 1,
            latest_wins_channels: vec![
                event_bus::Channel::INVENTORY,
                event_bus::Channel::PRICING,
                event_bus::Channel::LISTINGS,
            ],
            max_collapsed: 4_096,
            figures_interval_ms: 5_000,
            presence_interval_ms: 1_000,
            max_body_bytes: 1 << 20,
            write_timeout_ms: 15_000,
            slow_unsent_bytes: 0,
            slow_unsent_ms: 10_000,
            request_timeout_ms: 10_000,
            max_pending_connections: 1_024,
            ws_streamless_ms: 30_000,
            edge_threads: 0,
            main_threads: 0,
            edge_nice: 5,
            resume_rate_per_sec: 2.0,
            resume_burst: 20.0,
            allowed_origins: Vec::new(),
            auth: crate::auth::AuthConfig::default(),
            notifications: NotificationsConfig::default(),
            bus: BusConfig::default(),
        }
    }
}

fn default_instance() -> String {
    service_kit::default_instance("gateway")
}

/// The documented variable names (`docs/reference.md`, "Configuration") and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("HTTP_ADDR", "http_addr"),
    ("REDIS_URL", "bus.redis_url"),
    ("INSTANCE_ID", "instance_id"),
    ("REALTIME_PREFIX", "bus.prefix"),
    ("REALTIME_ENABLED", "realtime_enabled"),
    ("SSE_HEARTBEAT_INTERVAL", "heartbeat_interval_ms"),
    ("SSE_DEBOUNCE_WINDOW", "debounce_window_ms"),
    ("AUTH_MODE", "auth.mode"),
    ("JWT_HS256_SECRET", "auth.hs256_secret"),
    ("JWT_PUBLIC_KEY_FILE", "auth.public_key_file"),
    ("JWT_JWKS_FILE", "auth.jwks_file"),
];

impl GatewayConfig {
    /// Checks what serde cannot; the error names the key and the value.
    pub fn validate(&self) -> Result<(), String> {
        service_kit::check_http_addr(&self.http_addr)?;
        service_kit::check_instance_id(&self.instance_id)?;
        if !(1..=10).contains(&self.trusted_proxy_hops) {
            return Err(format!(
                "trusted_proxy_hops: {} is outside 1..=10",
                self.trusted_proxy_hops
            ));
        }
        if !(100..=3_600_000).contains(&self.heartbeat_interval_ms) {
            return Err(format!(
                "heartbeat_interval_ms (SSE_HEARTBEAT_INTERVAL): {} is outside 100..=3600000",
                self.heartbeat_interval_ms
            ));
        }
        if self.debounce_window_ms > 60_000 {
            return Err(format!(
                "debounce_window_ms (SSE_DEBOUNCE_WINDOW): {} is above 60000",
                self.debounce_window_ms
            ));
        }
        if !(2..=10_000).contains(&self.max_group) {
            return Err(format!("max_group: {} is outside 2..=10000", self.max_group));
        }
        if self.connection_queue < 16 {
            return Err(format!("connection_queue: {} is below 16", self.connection_queue));
        }
        if !(100..=600_000).contains(&self.figures_interval_ms) {
            return Err(format!(
                "figures_interval_ms: {} is outside 100..=600000",
                self.figures_interval_ms
            ));
        }
        if !(self.presence_interval_ms == 0 || (100..=60_000).contains(&self.presence_interval_ms)) {
            return Err(format!(
                "presence_interval_ms: {} is outside 100..=60000 (0: off)",
                self.presence_interval_ms
            ));
        }
        if self.max_connections == 0 {
            return Err("max_connections: must be at least 1".into());
        }
        if !(self.shed_above_fair_share == 0.0 || (1.05..=100.0).contains(&self.shed_above_fair_share)) {
            return Err(format!(
                "shed_above_fair_share: {} is neither 0 (off) nor within 1.05..=100",
                self.shed_above_fair_share
            ));
        }
        if self.max_connections_per_client == 0 {
            return Err("max_connections_per_client: must be at least 1".into());
        }
        for (key, value, range) in [
            ("write_timeout_ms", self.write_timeout_ms, 100..=600_000),
            ("slow_unsent_ms", self.slow_unsent_ms, 100..=600_000),
            ("slow_unsent_bytes", self.slow_unsent_bytes as u64, 0..=1 << 30),
            ("request_timeout_ms", self.request_timeout_ms, 100..=600_000),
            ("ws_streamless_ms", self.ws_streamless_ms, 100..=3_600_000),
            ("edge_threads", self.edge_threads as u64, 0..=1024),
            ("main_threads", self.main_threads as u64, 0..=1024),
            ("edge_nice", self.edge_nice as u64, 0..=19),
        ] {
            if !range.contains(&value) {
                return Err(format!("{key}: {value} is outside {}..={}", range.start(), range.end()));
            }
        }
        if !(self.resume_rate_per_sec > 0.0 && self.resume_burst >= 1.0) {
            return Err(format!(
                "resume_rate_per_sec / resume_burst: {} / {} must be above 0 and at least 1",
                self.resume_rate_per_sec, self.resume_burst
            ));
        }
        if self.drain_retry_spread_ms >= self.drain_grace_ms {
            return Err(format!(
                "drain_retry_spread_ms: {} must be below drain_grace_ms ({}): streams still open when the grace runs out are cut",
                self.drain_retry_spread_ms, self.drain_grace_ms
            ));
        }
        if self.max_pending_connections == 0 {
            return Err("max_pending_connections: must be at least 1".into());
        }
        for o in &self.allowed_origins {
            crate::auth::origin::check_allowed(o).map_err(|e| format!("allowed_origins: {e}"))?;
        }
        if self.max_collapsed == 0 {
            return Err("max_collapsed: must be at least 1".into());
        }
        self.bus
            .validate()
            .map_err(|e| format!("bus.{}: {}", e.key, e.message))?;
        if self.notifications.enabled {
            self.notifications.validate()?;
            let private = &self.notifications.channel;
            if self.latest_wins_channels.contains(private) {
                return Err(format!(
                    "latest_wins_channels: {private} is the private notification channel (notifications.channel); its events are not states"
                ));
            }
            if let Some(spec) = self.bus.channels.iter().find(|c| &c.name == private) {
                if spec != &self.notifications.channel_spec() {
                    return Err(format!(
                        "bus.channels: {private} is the private notification channel (notifications.channel): leave it out, the gateway adds it"
                    ));
                }
            }
        }
        crate::auth::Verifier::new(&self.auth).map(|_| ())
    }

    /// The bus configuration to connect with: `bus`, plus the private notification channel
    /// when notifications are on.
    pub fn bus_config(&self) -> BusConfig {
        let mut bus = self.bus.clone();
        if self.notifications.enabled && !bus.channels.iter().any(|c| c.name == self.notifications.channel) {
            bus.channels.push(self.notifications.channel_spec());
        }
        bus
    }

    /// The channels streams may ask for by name: the bus's, without the private one.
    pub fn public_channels(&self) -> Vec<event_bus::Channel> {
        self.bus
            .channel_names()
            .into_iter()
            .filter(|c| !self.notifications.enabled || c != &self.notifications.channel)
            .collect()
    }

    /// [`Self::write_timeout_ms`].
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// [`Self::request_timeout_ms`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<GatewayConfig, String> {
        let fixed = [("AUTH_MODE", "none")];
        testkit::config::load(
            &GatewayConfig::default(),
            ENV_ALIASES,
            &fixed,
            pairs,
            GatewayConfig::validate,
        )
    }

    #[test]
    fn phase27_names_still_work() {
        let c = load(&[
            ("SSE_HEARTBEAT_INTERVAL", "30000"),
            ("SSE_DEBOUNCE_WINDOW", "500"),
            ("REALTIME_ENABLED", "true"),
            ("HTTP_ADDR", "127.0.0.1:9000"),
            ("INSTANCE_ID", "gw-1"),
        ])
        .unwrap();
        assert_eq!(
            (c.heartbeat_interval_ms, c.debounce_window_ms, c.realtime_enabled),
            (30_000, 500, true)
        );
        assert_eq!(c.instance_id, "gw-1");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (var, value, key) in [
            ("SSE_HEARTBEAT_INTERVAL", "soon", "heartbeat_interval_ms"),
            ("SSE_HEARTBEAT_INTERVAL", "5", "SSE_HEARTBEAT_INTERVAL"),
            ("REALTIME_ENABLED", "maybe", "realtime_enabled"),
            ("HTTP_ADDR", "localhost", "HTTP_ADDR"),
            ("REDIS_URL", "http://x", "redis_url"),
            ("AUTH_MODE", "jwt", "JWT_HS256_SECRET"),
            ("AUTH_MODE", "maybe", "auth.mode"),
            ("RAKUDA__AUTH__PUBLISH_BURST", "999", "auth.publish_burst"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }
}
