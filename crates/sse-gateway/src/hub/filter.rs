//! What one connection wants.

use std::collections::HashSet;

use event_bus::{Channel, EventType};

/// What one connection wants: channels, and optionally only some types or entity ids.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Channels followed.
    pub channels: Vec<Channel>,
    /// Only these types, if set.
    pub types: Option<HashSet<EventType>>,
    /// Only events about these entities (`payload.id`), if set.
    pub ids: Option<HashSet<String>>,
    /// The user's view of the private notification channel (also in `channels`): its events
    /// reach the stream only when they are for this user, and `types`/`ids` do not apply to
    /// them (they select among the public channels' events).
    pub private: Option<notifications::Private>,
}

impl Filter {
    /// Whether the connection follows `channel` at all.
    pub fn follows(&self, channel: &Channel) -> bool {
        self.channels.contains(channel)
    }

    /// Whether the connection wants this event.
    pub fn wants(&self, env: &event_bus::Envelope) -> bool {
        if let Some(p) = &self.private {
            if env.channel == p.channel {
                return notifications::owner(env) == Some(p.user.as_str());
            }
        }
        self.follows(&env.channel)
            && self.types.as_ref().is_none_or(|t| t.contains(&env.event_type))
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&env.payload.id))
    }
}
