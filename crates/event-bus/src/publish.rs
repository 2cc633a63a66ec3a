//! What publishing answers ([`Published`]), and guarded publishes ([`Guard`], [`Guarded`]).
//!
//! A guarded publish: an event stored only if an entity's state is what the publisher last
//! saw, the state moved to its new value in the same atomic step.
//!
//! Workers that turn observations into change events (the worker-emitter: "stock ran out",
//! "price changed") compare with the last known state of the entity. Comparing and publishing
//! separately loses or reorders events when two jobs about one entity run at once, or when a
//! job dies between publishing and saving the new state. With a guard, the state lives next to
//! the channel's stream (`<prefix>state:{<channel>}:<entity>`, same hash tag, so one Lua call on
//! Redis Cluster too) and changes only together with the event: the stream order is the state
//! order, and a conflict tells the publisher to look again.

use crate::envelope::EventId;

/// The result of a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The stored event's id (for a duplicate: the id of the first publish with that key).
    pub id: EventId,
    /// The idempotency key was seen inside the window: nothing was stored or announced.
    pub duplicate: bool,
}

/// The condition and the new value of one entity's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// The entity, e.g. a product id (any non-empty text without control characters).
    pub entity: String,
    /// The state the publisher based its decision on; `None`: the entity has no state yet.
    pub expect: Option<String>,
    /// The state after this event.
    pub set: String,
    /// How long the state is kept after this change, in seconds; 0 keeps it until replaced.
    pub ttl_secs: u64,
}

impl Guard {
    /// Expect `expect`, then set `set`, kept until replaced.
    pub fn new(entity: impl Into<String>, expect: Option<String>, set: impl Into<String>) -> Self {
        Guard {
            entity: entity.into(),
            expect,
            set: set.into(),
            ttl_secs: 0,
        }
    }

    /// Keeps the new state for `secs` seconds after this change.
    pub fn with_ttl_secs(mut self, secs: u64) -> Self {
        self.ttl_secs = secs;
        self
    }
}

/// What a guarded publish (or state change) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// Stored (or, for a repeated idempotency key, found: `duplicate` set, the state untouched).
    Done(Published),
    /// Nothing stored: the entity's state is not what was expected. It is `current` now.
    Conflict {
        /// The state the entity has now.
        current: Option<String>,
    },
}

impl Guarded {
    /// The event id when stored or found.
    pub fn id(&self) -> Option<EventId> {
        match self {
            Guarded::Done(p) => Some(p.id),
            Guarded::Conflict { .. } => None,
        }
    }
}
