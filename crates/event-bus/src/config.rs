//! The bus configuration: which backend, which channels, how much history.
//!
//! Services embed [`BusConfig`] in their own configuration (the `config` crate fills it from
//! defaults, a file and the environment); the bus only checks it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    channel::{builtin_channels, Keys},
    error::ConfigError,
    name::{Channel, EventType},
};

/// A channel and the event types it carries (an empty list allows any type).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// The channel name.
    pub name: Channel,
    /// The event types allowed on it; empty means any.
    #[serde(default)]
    pub types: Vec<EventType>,
    /// Streams the channel is spread over, by entity (`payload.id`), 1 to [`MAX_PARTITIONS`]:
    /// 1 (the default) is one stream, `stream:{<name>}`; N > 1 is N streams,
    /// `stream:{<name>#0}` to `stream:{<name>#<N-1>}`, each with its own shard channel and hash
    /// slot, so the channel's rate is not bound to one Redis master. An entity's events are
    /// always in the same partition, in order. A cursor holds a position per partition; one
    /// written with another N gets a RESYNC of the channel ([`BusConfig::partitions_changed`]).
    #[serde(default = "one_partition")]
    pub partitions: u16,
}

fn one_partition() -> u16 {
    1
}

/// Partitions a channel may have at most.
pub const MAX_PARTITIONS: u16 = 64;

impl ChannelSpec {
    /// A channel of one stream carrying `types` (empty: any).
    pub fn new(name: Channel, types: Vec<EventType>) -> Self {
        ChannelSpec {
            name,
            types,
            partitions: 1,
        }
    }
}

/// How long a partition's stream (one per user, [`Channel::user_partition`]) lives after its
/// last event when the retention has no age bound; with one, the age bound.
pub const PARTITION_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How much history each channel's stream keeps. Either bound, or both, may be set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Keep about this many events per channel (`XADD MAXLEN ~`); 0 means no count bound.
    pub max_len: u64,
    /// Keep events younger than this many seconds (`XTRIM MINID ~`); 0 means no age bound.
    pub max_age_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_len: 100_000,
            max_age_secs: 24 * 3600,
        }
    }
}

/// Everything the bus needs to know. Its `Debug` shows `redis_url` through [`redact_url`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `redis://host:port/db`, `redis-cluster://host:port?node=host:port`, ...; `None` selects
    /// the in-process memory backend.
    pub redis_url: Option<String>,
    /// Prefix of every Redis name (`docs/reference.md`, "Redis keys").
    pub prefix: String,
    /// The channels and their event types; by default the four built-in ones.
    pub channels: Vec<ChannelSpec>,
    /// Stream retention.
    pub retention: Retention,
    /// How long an idempotency key is remembered, in seconds.
    pub dedupe_window_secs: u64,
    /// Events kept per channel by the memory backend (it also honours `retention`).
    pub memory_capacity: usize,
    /// Store plain Node-style `PUBLISH`es (an envelope without `id`) in the stream, so they
    /// reach subscribers and become resumable.
    pub adopt_plain_publishes: bool,
    /// Also announce each stored event with a classic `PUBLISH` on its Phase 27 channel
    /// (`rakuda:realtime:<channel>`), for Node code that subscribes there. Off by default: the
    /// live path announces on the channel's shard channel only (`SPUBLISH`), and on a Cluster
    /// a classic `PUBLISH` goes to every node.
    pub announce_plain: bool,
    /// How long two identical plain publishes are told apart by their order of arrival, in
    /// seconds (see the crate docs on Node interop).
    pub adopt_window_secs: u64,
    /// Timeout of one Redis command, in milliseconds.
    pub command_timeout_ms: u64,
    /// Replicas that must have an event before its publish is acknowledged (Redis `WAIT`);
    /// 0 (the default) acknowledges once the primary stored it. With 1 or more, an event
    /// acknowledged survives a failover to a replica; see `docs/reference.md`, "Failover".
    pub wait_replicas: u32,
    /// How long a publish waits for `wait_replicas`, in ms; past it the publish fails
    /// (the event may still be stored: retry with the idempotency key).
    pub wait_timeout_ms: u64,
    /// Events fetched per stream read, and buffered per subscription.
    pub read_batch: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            redis_url: None,
            prefix: "rakuda:realtime:".to_owned(),
            channels: builtin_channels()
                .into_iter()
                .map(|(name, ty)| ChannelSpec::new(name, vec![ty]))
                .collect(),
            retention: Retention::default(),
            dedupe_window_secs: 24 * 3600,
            memory_capacity: 100_000,
            adopt_plain_publishes: true,
            announce_plain: false,
            adopt_window_secs: 60,
            command_timeout_ms: 5_000,
            wait_replicas: 0,
            wait_timeout_ms: 1_000,
            read_batch: 512,
        }
    }
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .field("channels", &self.channels)
            .field("retention", &self.retention)
            .field("dedupe_window_secs", &self.dedupe_window_secs)
            .field("memory_capacity", &self.memory_capacity)
            .field("adopt_plain_publishes", &self.adopt_plain_publishes)
            .field("announce_plain", &self.announce_plain)
            .field("adopt_window_secs", &self.adopt_window_secs)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .field("read_batch", &self.read_batch)
            .finish()
    }
}

/// A Redis URL fit for a log line or an error message: the password of its user info
/// (`redis://user:secret@host` -> `redis://user:***@host`, `redis://:secret@host` ->
/// `redis://:***@host`) and the value of any query parameter whose name mentions a password
/// (`sentinelPassword=...`) are replaced by `***`. Text that is not a URL is shown only up to
/// its first `@`, so a malformed URL cannot carry a secret out either.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return match url.rfind('@') {
            Some(at) => format!("***{}", &url[at..]),
            None => url.to_owned(),
        };
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end + 3]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                // A lone user info is a password for Redis (`AUTH <password>`).
                None if !userinfo.is_empty() => out.push_str("***"),
                None => {}
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (path, query) = match tail.find('?') {
        Some(q) => tail.split_at(q),
        None => (tail, ""),
    };
    out.push_str(path);
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        let (query, fragment) = match query.find('#') {
            Some(h) => query.split_at(h),
            None => (query, ""),
        };
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
        out.push_str(fragment);
    }
    out
}

impl BusConfig {
    /// Checks every value; the error names the key (relative to the bus section, e.g. `prefix`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError {
                key: key.to_owned(),
                message,
            })
        };
        if let Some(url) = &self.redis_url {
            let schemes = [
                "redis://",
                "rediss://",
                "redis-cluster://",
                "rediss-cluster://",
                "redis-sentinel://",
            ];
            if !schemes.iter().any(|s| url.starts_with(s)) || fred::types::config::Config::from_url(url).is_err() {
                return bad(
                    "redis_url",
                    format!(
                        "{:?} is not a redis://, rediss://, redis-cluster:// or redis-sentinel:// URL",
                        redact_url(url)
                    ),
                );
            }
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', '*', '?', '[', ']', ' ']) {
            return bad(
                "prefix",
                format!(
                    "{:?} must be non-empty, without braces, glob characters or spaces",
                    self.prefix
                ),
            );
        }
        if self.channels.is_empty() {
            return bad("channels", "at least one channel is needed".into());
        }
        for (i, c) in self.channels.iter().enumerate() {
            if self.channels[..i].iter().any(|o| o.name == c.name) {
                return bad("channels", format!("channel {} is listed twice", c.name));
            }
            if !(1..=MAX_PARTITIONS).contains(&c.partitions) {
                return bad(
                    "channels",
                    format!("channel {}: partitions must be 1 to {MAX_PARTITIONS}", c.name),
                );
            }
            if c.partitions > 1 && c.name.partition(&(c.partitions - 1).to_string()).is_err() {
                return bad(
                    "channels",
                    format!("channel {}: too long a name for its partitions' names", c.name),
                );
            }
            if c.name.is_partition() {
                return bad(
                    "channels",
                    format!(
                        "channel {}: `#` starts a partition key; a channel name has none",
                        c.name
                    ),
                );
            }
        }
        if self.retention.max_len == 0 && self.retention.max_age_secs == 0 {
            return bad(
                "retention",
                "set max_len or max_age_secs: an unbounded stream grows until Redis runs out of memory".into(),
            );
        }
        if self.dedupe_window_secs == 0 {
            return bad("dedupe_window_secs", "must be at least 1".into());
        }
        if self.memory_capacity == 0 {
            return bad("memory_capacity", "must be at least 1".into());
        }
        if self.adopt_window_secs == 0 {
            return bad("adopt_window_secs", "must be at least 1".into());
        }
        if self.command_timeout_ms < 10 {
            return bad(
                "command_timeout_ms",
                format!("{} is too short (at least 10)", self.command_timeout_ms),
            );
        }
        if self.wait_replicas > 0 && !(1..self.command_timeout_ms).contains(&self.wait_timeout_ms) {
            return bad(
                "wait_timeout_ms",
                format!(
                    "{} must be at least 1 and below command_timeout_ms ({})",
                    self.wait_timeout_ms, self.command_timeout_ms
                ),
            );
        }
        if self.wait_replicas > 0 && self.redis_url.is_none() {
            return bad(
                "wait_replicas",
                "the memory backend has no replicas: leave it 0 or set redis_url".into(),
            );
        }
        if !(1..=10_000).contains(&self.read_batch) {
            return bad("read_batch", format!("{} is outside 1..=10000", self.read_batch));
        }
        Ok(())
    }

    /// The Redis names under the configured prefix.
    pub fn keys(&self) -> Keys {
        Keys::new(self.prefix.clone())
    }

    /// The configured channel names.
    pub fn channel_names(&self) -> Vec<Channel> {
        self.channels.iter().map(|c| c.name.clone()).collect()
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// A channel's spec; a partition has its channel's.
    pub(crate) fn spec(&self, channel: &Channel) -> Option<&ChannelSpec> {
        if channel.is_partition() {
            let name = channel.logical();
            return self.channels.iter().find(|c| c.name.as_str() == name);
        }
        self.channels.iter().find(|c| &c.name == channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_have_the_builtin_channels() {
        let c = BusConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.channel_names(),
            vec![Channel::INVENTORY, Channel::ORDERS, Channel::PRICING, Channel::LISTINGS]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        type Mutation = Box<dyn Fn(&mut BusConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("redis_url", Box::new(|c| c.redis_url = Some("http://x".into()))),
            ("prefix", Box::new(|c| c.prefix = "a{b}".into())),
            ("channels", Box::new(|c| c.channels.clear())),
            (
                "retention",
                Box::new(|c| {
                    c.retention = Retention {
                        max_len: 0,
                        max_age_secs: 0,
                    }
                }),
            ),
            ("read_batch", Box::new(|c| c.read_batch = 0)),
        ];
        for (key, mutate) in cases {
            let mut c = BusConfig::default();
            mutate(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn passwords_stay_out_of_errors_logs_and_debug() {
        for (url, shown) in [
            ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
            ("redis://app:s3cret@h:1", "redis://app:***@h:1"),
            ("rediss://s3cret@h:1/2?x=1", "rediss://***@h:1/2?x=1"),
            (
                "redis-sentinel://:s3cret@h:1/0?sentinelPassword=s3cret&node=a:2",
                "redis-sentinel://:***@h:1/0?sentinelPassword=***&node=a:2",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url s3cret@h", "***@h"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        // A bad URL's error names the key and not the password.
        let c = BusConfig {
            redis_url: Some("http://app:s3cret@h:1".into()),
            ..Default::default()
        };
        let err = c.validate().unwrap_err();
        assert_eq!(err.key, "redis_url");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<BusConfig>(r#"{"prefx":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("prefx"), "{err}");
    }
}
