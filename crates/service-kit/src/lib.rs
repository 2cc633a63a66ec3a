//! Process lifecycle for the rakuda services: configuration, logs, shutdown, and serving a
//! small HTTP API with bounded connections.
//!
//! # Layout
//! - [`load_config`]: defaults, then the file named by `CONFIG_FILE`, then environment
//!   variables (the variable names of `docs/reference.md`, "Configuration", through aliases, any key as `RAKUDA__SECTION__KEY`).
//! - [`init_tracing`]: `LOG_FORMAT=json|pretty`, filtered by `RUST_LOG`.
//! - [`shutdown_token`]: SIGTERM (Kubernetes starts a graceful shutdown with it) or Ctrl-C
//!   cancels a token that every task of the service watches.
//! - [`start_or_exit`]: all of the above for a `main`, exiting with [`EXIT_BAD_CONFIG`] (64)
//!   on a configuration that cannot be used.
//! - [`deadline`]: write (and read) deadlines on a socket; [`http::serve`]: a small HTTP API
//!   with every connection bounded.
//! - [`trace`]: the spans of an event's hops, exported over OTLP when configured; started by
//!   [`start_or_exit`], flushed by [`trace::shutdown`].

pub mod deadline;
pub mod http;
pub mod trace;

use std::collections::HashMap;

use serde::{de::DeserializeOwned, Serialize};
use tokio_util::sync::CancellationToken;

/// Exit code for a bad configuration (EX_USAGE), before any port is bound.
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Checks `http_addr` (`HTTP_ADDR`) is `host:port`; the error names the key.
pub fn check_http_addr(value: &str) -> Result<(), String> {
    value
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|e| format!("http_addr (HTTP_ADDR): {value:?} is not host:port: {e}"))
}

/// Checks `instance_id` (`INSTANCE_ID`): 1-128 characters without spaces (it is part of Redis
/// keys and metric labels); the error names the key.
pub fn check_instance_id(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 || value.contains(char::is_whitespace) {
        return Err(format!(
            "instance_id (INSTANCE_ID): {value:?} must be 1-128 characters without spaces"
        ));
    }
    Ok(())
}

/// A Prometheus registry in the text exposition format (`GET /metrics`).
pub fn render_metrics(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encode metrics");
    String::from_utf8(out).expect("utf-8 metrics")
}

/// The default `INSTANCE_ID`: `HOSTNAME`, else `/etc/hostname`, else `fallback`.
pub fn default_instance(fallback: &str) -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| fallback.into())
}

/// A configuration that cannot be used. The message names the key and the value.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The process environment as a map (tests pass their own map instead).
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Loads `T`: `defaults`, overlaid by the TOML file `CONFIG_FILE` (if set), overlaid by the
/// environment. `aliases` maps the documented variable names to keys (`("REDIS_URL", "bus.redis_url")`); an
/// empty value counts as unset;
/// besides those, `RAKUDA__BUS__RETENTION__MAX_LEN=5` sets `bus.retention.max_len`.
pub fn load_config<T>(defaults: &T, aliases: &[(&str, &str)], env: &HashMap<String, String>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let err = |e: config::ConfigError| ConfigError(e.to_string());
    let mut builder = config::Config::builder().add_source(config::Config::try_from(defaults).map_err(err)?);
    if let Some(file) = env.get("CONFIG_FILE").filter(|f| !f.is_empty()) {
        if !std::path::Path::new(file).is_file() {
            return Err(ConfigError(format!("CONFIG_FILE={file:?}: no such file")));
        }
        builder = builder.add_source(config::File::new(file, config::FileFormat::Toml).required(true));
    }
    let prefixed: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("RAKUDA__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("RAKUDA")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(prefixed)),
    );
    for (name, key) in aliases {
        // `REDIS_URL=` (empty, as shells and compose files often leave it) means unset.
        if let Some(value) = env.get(*name).filter(|v| !v.is_empty()) {
            builder = builder
                .set_override(*key, value.as_str())
                .map_err(|e| ConfigError(format!("{name}={value:?}: {e}")))?;
        }
    }
    let built = builder.build().map_err(err)?;
    built.try_deserialize::<T>().map_err(|e| {
        // Name the documented variable too when the bad key came from one.
        let text = e.to_string();
        match aliases.iter().find(|(_, key)| text.contains(&format!("`{key}`"))) {
            Some((name, _)) => ConfigError(format!(
                "{text} (set by {name}={:?})",
                env.get(*name).map(String::as_str).unwrap_or("")
            )),
            None => ConfigError(text),
        }
    })
}

/// The start of every service's `main`: reads `LOG_FORMAT`, installs tracing, loads the
/// configuration and checks it with `validate`. A bad configuration prints what is wrong
/// (naming the key) and exits with [`EXIT_BAD_CONFIG`] before any port is bound.
pub fn start_or_exit<T>(
    service: &str,
    defaults: &T,
    aliases: &[(&str, &str)],
    validate: impl Fn(&T) -> Result<(), String>,
) -> T
where
    T: Serialize + DeserializeOwned,
{
    let env = process_env();
    let config = LogFormat::from_env(&env)
        .map_err(|e| e.to_string())
        .and_then(|format| {
            init_tracing(format);
            trace::init(service)?;
            load_config(defaults, aliases, &env).map_err(|e| e.to_string())
        })
        .and_then(|c| validate(&c).map(|_| c));
    match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{service}: bad configuration: {e}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable (development).
    Pretty,
}

impl LogFormat {
    /// Reads `LOG_FORMAT` (`json` or `pretty`, default `pretty`).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        match env.get("LOG_FORMAT").map(String::as_str) {
            None | Some("pretty") => Ok(LogFormat::Pretty),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(ConfigError(format!("LOG_FORMAT={other:?}: expected json or pretty"))),
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// A token cancelled on SIGTERM or Ctrl-C. Kubernetes sends SIGTERM to start a graceful
/// shutdown; the service then drains within its grace period.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    t.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        t.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Inner {
        max_len: u64,
        name: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Conf {
        http_addr: String,
        inner: Inner,
        enabled: bool,
    }

    fn defaults() -> Conf {
        Conf {
            http_addr: "127.0.0.1:8080".into(),
            inner: Inner {
                max_len: 10,
                name: "a".into(),
            },
            enabled: true,
        }
    }

    const ALIASES: &[(&str, &str)] = &[
        ("HTTP_ADDR", "http_addr"),
        ("MAX_LEN", "inner.max_len"),
        ("REALTIME_ENABLED", "enabled"),
    ];

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        assert_eq!(load_config(&defaults(), ALIASES, &env(&[])).unwrap(), defaults());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "http_addr = \"0.0.0.0:1\"\n[inner]\nmax_len = 20\n").unwrap();
        let c = load_config(
            &defaults(),
            ALIASES,
            &env(&[
                ("CONFIG_FILE", file.to_str().unwrap()),
                ("MAX_LEN", "30"),
                ("RAKUDA__INNER__NAME", "b"),
                ("REALTIME_ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http_addr, "0.0.0.0:1");
        assert_eq!(c.inner.max_len, 30);
        assert_eq!(c.inner.name, "b");
        assert!(!c.enabled);
        let c = load_config(&defaults(), ALIASES, &env(&[("HTTP_ADDR", "")])).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:8080", "an empty variable counts as unset");
    }

    #[test]
    fn bad_values_name_the_key_and_the_variable() {
        let e = load_config(&defaults(), ALIASES, &env(&[("MAX_LEN", "lots")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("inner.max_len") && text.contains("MAX_LEN") && text.contains("lots"),
            "{text}"
        );
        let e = load_config(&defaults(), ALIASES, &env(&[("CONFIG_FILE", "/nonexistent.toml")])).unwrap_err();
        assert!(e.to_string().contains("CONFIG_FILE"), "{e}");
        assert!(LogFormat::from_env(&env(&[("LOG_FORMAT", "xml")])).is_err());
    }
}
