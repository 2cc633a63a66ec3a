//! What a processor is: it reads a job, plans, and decides against the entity's last state.
//!
//! A processor does not publish itself. It returns a [`Plan`]: the entity the job is about and
//! a pure decision given that entity's current state. The runner ([`crate::runner`]) reads the
//! state, asks for the decision, and publishes with a guard on that state and an idempotency
//! key derived from the job, retrying the decision when another job moved the state first.
//! That is what makes emission exactly-once and in state order, whatever the retries, stalls,
//! kills and concurrent jobs.

use event_bus::{Channel, NewEvent};
use futures::future::BoxFuture;
use serde_json::Value;

/// A job as a processor sees it.
#[derive(Clone, Debug)]
pub struct JobInput {
    /// The queue it came from.
    pub queue: String,
    /// BullMQ's job id.
    pub id: String,
    /// The job name given by the producer.
    pub name: String,
    /// The job data.
    pub data: Value,
    /// Attempts made before this one.
    pub attempts_made: u32,
    /// The trace of this attempt (its span's ids; the producer's trace when the job data has a
    /// W3C `traceparent`): the events it emits carry it.
    pub traceparent: Option<event_bus::Traceparent>,
}

/// Why a job failed: the text becomes the job's `failedReason` (Node's `job.failedReason`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The job data is not what this queue takes; retrying cannot help (no further attempts).
    #[error("invalid job data: {0}")]
    Invalid(String),
    /// Something outside failed (an HTTP source, Redis); the job is retried per its options.
    #[error("{0}")]
    Transient(String),
    /// The event bus cannot be reached now (Redis restarting, a failover): the job waits for
    /// it in place, holding its lock, then is retried per its options like a transient error.
    #[error("{0}")]
    Unavailable(String),
}

/// What to do, given the entity's current state.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing to emit; the reason is in the job's return value (`{"emitted": [], "reason"}`).
    Unchanged(&'static str),
    /// Record `state` without an event: a first observation is a baseline, not a change.
    Baseline {
        /// The entity's new state.
        state: String,
    },
    /// Emit `event` and move the entity's state to `state`, together.
    Emit {
        /// The event (the runner adds the idempotency key).
        event: NewEvent,
        /// The entity's new state.
        state: String,
    },
}

/// The decision function of a plan: pure, called again if the state moved meanwhile.
pub type Decide = Box<dyn Fn(Option<&str>) -> Result<Decision, JobError> + Send + Sync>;

/// A processor's plan for one job.
pub struct Plan {
    /// The entity the job is about (a product, an order, a listing).
    pub entity: String,
    /// The decision, given the entity's current state.
    pub decide: Decide,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("entity", &self.entity)
            .finish_non_exhaustive()
    }
}

/// A processor for one queue: the "hooks" of the Phase 27 design. Implement it to add your own
/// and register it with [`crate::Emitter`].
pub trait Processor: Send + Sync + 'static {
    /// The queue it takes jobs from (by default named like its channel).
    fn queue(&self) -> &str;
    /// The channel its events go to.
    fn channel(&self) -> Channel;
    /// How long an entity's state is kept after its last change, in seconds (0: forever).
    fn state_ttl_secs(&self) -> u64 {
        0
    }
    /// Validates the job and gathers what the decision needs (it may do I/O).
    fn plan<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Result<Plan, JobError>>;
}

/// Parses job data into `T`, naming what is wrong in words a producer can act on.
pub fn parse<T: serde::de::DeserializeOwned>(data: &Value) -> Result<T, JobError> {
    serde_json::from_value(data.clone()).map_err(|e| JobError::Invalid(e.to_string()))
}

/// Checks an ISO 4217-looking currency code.
pub fn check_currency(field: &str, c: &str) -> Result<(), JobError> {
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(JobError::Invalid(format!(
            "{field}: {c:?} is not a 3-letter currency code like \"USD\""
        )))
    }
}

/// Checks a price: finite and not negative.
pub fn check_price(field: &str, p: f64) -> Result<(), JobError> {
    if p.is_finite() && p >= 0.0 {
        Ok(())
    } else {
        Err(JobError::Invalid(format!(
            "{field}: {p} is not a price (a number >= 0)"
        )))
    }
}

/// Checks an id: 1-200 characters without control characters.
pub fn check_id(field: &str, id: &str) -> Result<(), JobError> {
    if !id.is_empty() && id.len() <= 200 && !id.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(JobError::Invalid(format!(
            "{field}: must be 1-200 characters without control characters"
        )))
    }
}

/// Prices equal to the cent's hundredth are equal (they arrive as JSON numbers).
pub(crate) fn same_price(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}
