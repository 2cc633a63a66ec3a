//! The errors of the bus.

use crate::name::{Channel, EventType};

/// A configuration value that cannot be used; it names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad configuration value for `{key}`: {message}")]
pub struct ConfigError {
    /// The configuration key, e.g. `bus.retention.max_len`.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

/// What can go wrong when publishing or subscribing.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The channel is not configured.
    #[error("unknown channel {0:?}: it is not in the configured channel list")]
    UnknownChannel(Channel),
    /// The channel is spread over partitions: a replay reads one stream at a time
    /// ([`crate::BusConfig::streams_of`]).
    #[error("channel {0} has partitions: read each of its streams ({0}#0, {0}#1, ...)")]
    Partitioned(Channel),
    /// The channel does not carry this event type.
    #[error("event type {event_type} is not allowed on channel {channel}")]
    UnknownType {
        /// The channel.
        channel: Channel,
        /// The rejected type.
        event_type: EventType,
    },
    /// The idempotency key is empty, too long, or has spaces or braces.
    #[error("invalid idempotency key {0:?}: 1 to 200 visible ASCII characters, no braces")]
    InvalidIdempotencyKey(String),
    /// `payload.id` is longer than [`crate::MAX_PAYLOAD_ID`] bytes.
    #[error("payload.id is {0} bytes long: at most 256")]
    PayloadIdTooLong(usize),
    /// An entity name for a guarded publish is empty, too long, or has control characters.
    #[error("invalid entity {0:?}: 1 to 512 characters, no control characters")]
    InvalidEntity(String),
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis answered with an error or could not be reached.
    #[error("redis {context}: {source}")]
    Redis {
        /// What the bus was doing.
        context: &'static str,
        /// fred's error.
        #[source]
        source: fred::error::Error,
    },
    /// Redis answered something the bus did not expect.
    #[error("unexpected redis reply to {context}: {detail}")]
    Protocol {
        /// What the bus was doing.
        context: &'static str,
        /// What came back.
        detail: String,
    },
    /// Stored on the primary, but fewer replicas than `wait_replicas` confirmed it within
    /// `wait_timeout_ms`: not acknowledged. A retry with the same idempotency key stores
    /// nothing twice.
    #[error("stored on the primary but confirmed by {got} of {wanted} replicas within the wait timeout")]
    NotReplicated {
        /// `wait_replicas`.
        wanted: u32,
        /// Replicas that confirmed.
        got: u32,
    },
    /// The bus was closed.
    #[error("the bus is closed")]
    Closed,
}

impl BusError {
    /// The same error again, for each of several callers one failed call served (fred's errors
    /// are not `Clone`: kind and details are kept).
    pub(crate) fn shared(&self) -> BusError {
        match self {
            BusError::Redis { context, source } => BusError::Redis {
                context,
                source: fred::error::Error::new(source.kind().clone(), source.details().to_owned()),
            },
            BusError::Protocol { context, detail } => BusError::Protocol {
                context,
                detail: detail.clone(),
            },
            BusError::NotReplicated { wanted, got } => BusError::NotReplicated {
                wanted: *wanted,
                got: *got,
            },
            BusError::Closed => BusError::Closed,
            other => BusError::Protocol {
                context: "a shared script call",
                detail: other.to_string(),
            },
        }
    }

    /// Whether the store could not be reached or could not take the command now (a lost
    /// connection, a timeout, a restart still loading, a failover under way, too few replicas):
    /// the same call may well succeed in a moment. The caller's mistakes and unexpected
    /// replies are not.
    pub fn is_unavailable(&self) -> bool {
        use fred::error::ErrorKind;
        match self {
            BusError::NotReplicated { .. } => true,
            BusError::Redis { source, .. } => {
                matches!(
                    source.kind(),
                    ErrorKind::IO
                        | ErrorKind::Timeout
                        | ErrorKind::Canceled
                        | ErrorKind::Cluster
                        | ErrorKind::Sentinel
                        | ErrorKind::Backpressure
                        | ErrorKind::Routing
                ) || [
                    "LOADING",
                    "READONLY",
                    "MASTERDOWN",
                    "TRYAGAIN",
                    "CLUSTERDOWN",
                    "NOREPLICAS",
                ]
                .iter()
                .any(|p| source.details().starts_with(p))
            }
            _ => false,
        }
    }

    pub(crate) fn redis(context: &'static str) -> impl FnOnce(fred::error::Error) -> BusError {
        move |source| BusError::Redis { context, source }
    }
}
