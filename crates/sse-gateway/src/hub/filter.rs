//! What one connection wants.

use std::collections::HashSet;

use event_bus::{Channel, EventType};

/// The channels of a list as clients name them: a partition by its channel, each once.
pub fn logical_names(channels: &[Channel]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(channels.len());
    for c in channels {
        if !out.iter().any(|n| n == c.logical()) {
            out.push(c.logical().to_owned());
        }
    }
    out
}

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
    /// It asked for `PRESENCE` messages of its channels (`presence=1`).
    pub presence: bool,
}

impl Filter {
    /// Whether the connection follows `channel` at all.
    pub fn follows(&self, channel: &Channel) -> bool {
        self.channels.contains(channel)
    }

    /// The one channel of a filter that selects nothing else: it wants exactly that
    /// channel's events.
    pub fn only_channel(&self) -> Option<&Channel> {
        match (&self.channels[..], &self.types, &self.ids, &self.private) {
            ([one], None, None, None) => Some(one),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Action, Envelope, EventId, Payload, Timestamp};

    #[test]
    fn a_filter_with_only_a_channel_wants_exactly_its_events() {
        let env = |channel: &Channel, t: EventType, id: &str| Envelope {
            id: EventId::new(1, 0),
            event_type: t,
            channel: channel.clone(),
            payload: Payload::new(id.to_owned(), Action::Updated),
            timestamp: Timestamp::now(),
            traceparent: None,
        };
        let one = |c: &Channel| Filter {
            channels: vec![c.clone()],
            ..Default::default()
        };
        let filters = [
            one(&Channel::ORDERS),
            Filter {
                channels: vec![Channel::ORDERS, Channel::PRICING],
                ..Default::default()
            },
            Filter {
                types: Some([EventType::INVENTORY_CHANGE].into()),
                ..one(&Channel::ORDERS)
            },
            Filter {
                ids: Some(["a".to_owned()].into()),
                ..one(&Channel::ORDERS)
            },
        ];
        let mut fast = 0;
        for f in &filters {
            for c in [Channel::ORDERS, Channel::PRICING, Channel::INVENTORY] {
                for t in [EventType::INVENTORY_CHANGE, EventType::ORDER_RECEIVED] {
                    for id in ["a", "b"] {
                        let e = env(&c, t.clone(), id);
                        if let Some(only) = f.only_channel() {
                            fast += 1;
                            assert_eq!(*only == e.channel, f.wants(&e), "{f:?} {e:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(fast, 12, "only the first filter takes the fast path");
    }
}
