//! Which events a route takes: its channels, its types, and conditions on the event's fields
//! (`payload.data.isAvailable == false`: stock-outs only). A field is a dotted path into the
//! envelope as JSON (`type`, `channel`, `payload.id`, `payload.data.<name>`).

use event_bus::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A route as configured (`routes.<name>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    /// The channels it takes; empty: every channel.
    pub channels: Vec<String>,
    /// The event types it takes; empty: every type but `ACK` (acknowledgements, for the
    /// dashboards).
    pub types: Vec<String>,
    /// Conditions, all of which must hold: `<field> <op> <JSON value>`, op one of
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    pub when: Vec<String>,
    /// The destinations (names under `destinations.`) its events go to.
    pub destinations: Vec<String>,
    /// The message of one event (`template` module); default: the event type's built-in one.
    pub template: Option<String>,
    /// A digest window in ms: the route's events of each window (aligned to the events' ids)
    /// leave as one message; 0: each alone.
    pub digest_window_ms: u64,
    /// Escalation: wait this long (ms) and send only if the condition `unless` was not met by
    /// then (`crate::escalate`); 0: send at once.
    pub escalate_after_ms: u64,
    /// `acknowledged` (the default) or `seen`: the acknowledgement that stops an escalation.
    pub unless: Option<String>,
    /// Whose acknowledgement counts: empty, anyone's; `role:<role>`; or user ids.
    pub by: Vec<String>,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// One parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    path: Vec<String>,
    op: Op,
    value: Value,
}

impl Condition {
    /// Parses `<field> <op> <JSON value>`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (field, op, value) = ops
            .iter()
            .find_map(|(s, op)| text.split_once(s).map(|(f, v)| (f.trim(), *op, v.trim())))
            .ok_or_else(|| format!("{text:?}: expected <field> <op> <value> with op one of == != < <= > >="))?;
        let path: Vec<String> = field.split('.').map(str::to_owned).collect();
        let known_root = matches!(path[0].as_str(), "type" | "channel" | "id" | "timestamp" | "payload");
        if field.is_empty() || path.iter().any(String::is_empty) || !known_root {
            return Err(format!(
                "{text:?}: the field {field:?} is not type, channel, id, timestamp or payload.<...>"
            ));
        }
        let value: Value = serde_json::from_str(value)
            .map_err(|e| format!("{text:?}: the value {value:?} is not JSON ({e}); quote strings"))?;
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && !value.is_number() {
            return Err(format!("{text:?}: < <= > >= compare numbers"));
        }
        Ok(Condition { path, op, value })
    }

    /// Whether the event's field meets it (a missing field meets only `!=`).
    pub fn holds(&self, event: &Value) -> bool {
        let found = self.path.iter().try_fold(event, |v, k| v.get(k));
        match (found, self.op) {
            (None, op) => op == Op::Ne,
            (Some(v), Op::Eq) => *v == self.value,
            (Some(v), Op::Ne) => *v != self.value,
            (Some(v), op) => match (v.as_f64(), self.value.as_f64()) {
                (Some(a), Some(b)) => match op {
                    Op::Lt => a < b,
                    Op::Le => a <= b,
                    Op::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        }
    }
}

/// A route ready to match: its conditions parsed.
#[derive(Clone, Debug)]
pub struct Matcher {
    route: Route,
    conditions: Vec<Condition>,
}

impl Matcher {
    /// Parses the route's conditions; the error names the one that is wrong.
    pub fn new(route: Route) -> Result<Matcher, String> {
        let conditions = route
            .when
            .iter()
            .enumerate()
            .map(|(i, c)| Condition::parse(c).map_err(|e| format!("when[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Matcher { route, conditions })
    }

    /// The route.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Whether the route takes `event`.
    pub fn takes(&self, event: &Envelope) -> bool {
        let r = &self.route;
        if !r.channels.is_empty() && !r.channels.iter().any(|c| c == event.channel.logical()) {
            return false;
        }
        if !r.types.is_empty() && !r.types.iter().any(|t| t == event.event_type.as_str()) {
            return false;
        }
        // An acknowledgement is for the dashboards: only a route that names `ACK` takes it.
        if r.types.is_empty() && event.event_type == event_bus::EventType::ACK {
            return false;
        }
        if self.conditions.is_empty() {
            return true;
        }
        let json = serde_json::to_value(event).unwrap_or(Value::Null);
        self.conditions.iter().all(|c| c.holds(&json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Action, Channel, EventId, EventType, Payload, Timestamp};
    use serde_json::json;

    fn stock(available: bool, price: f64) -> Envelope {
        Envelope {
            id: EventId::new(1, 0),
            event_type: EventType::INVENTORY_CHANGE,
            channel: Channel::INVENTORY,
            payload: Payload::new("prod_1", Action::Updated)
                .with_data(json!({"isAvailable": available, "price": price})),
            timestamp: Timestamp::now(),
            traceparent: None,
        }
    }

    #[test]
    fn stock_outs_only() {
        let m = Matcher::new(Route {
            channels: vec!["inventory".into()],
            types: vec!["INVENTORY_CHANGE".into()],
            when: vec![
                "payload.data.isAvailable == false".into(),
                "payload.data.price >= 10".into(),
            ],
            destinations: vec!["slack".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(m.takes(&stock(false, 12.0)));
        assert!(!m.takes(&stock(true, 12.0)), "back in stock");
        assert!(!m.takes(&stock(false, 5.0)), "cheap");
        let other_channel = Envelope {
            channel: Channel::PRICING,
            ..stock(false, 12.0)
        };
        assert!(!m.takes(&other_channel));
        // An event of a partition of the channel (`bus.channels[].partitions`) is the channel's.
        let partitioned = Envelope {
            channel: Channel::INVENTORY.partition("3").unwrap(),
            ..stock(false, 12.0)
        };
        assert!(m.takes(&partitioned));
        let by_condition = Matcher::new(Route {
            when: vec!["channel == \"inventory\"".into()],
            destinations: vec!["slack".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(by_condition.takes(&partitioned), "conditions see the channel too");
    }

    #[test]
    fn conditions_parse_strictly_and_say_why() {
        assert!(Condition::parse("payload.data.x == \"a\"").is_ok());
        assert!(Condition::parse("payload.id != null")
            .unwrap()
            .holds(&json!({"payload": {"id": "x"}})));
        assert!(
            Condition::parse("payload.missing != 1").unwrap().holds(&json!({})),
            "missing is not equal"
        );
        assert!(!Condition::parse("payload.missing == 1").unwrap().holds(&json!({})));
        for (bad, says) in [
            ("payload.data.x", "expected <field> <op>"),
            ("secret == 1", "is not type, channel"),
            ("payload..x == 1", "is not type"),
            ("payload.data.x == abc", "quote strings"),
            ("payload.data.x < \"a\"", "compare numbers"),
        ] {
            let e = Condition::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Matcher::new(Route {
            when: vec!["type == 1".into(), "nope".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("when[1]:"), "{e}");
    }
}
