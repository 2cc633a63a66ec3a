//! Escalation: a route that waits (`escalate_after_ms`) and sends only if no one on a
//! dashboard saw or acknowledged the event in the meantime (`unless`, `by`).
//!
//! The reader holds such a route's event instead of queueing it ([`crate::store::Held`]: in
//! Redis, by due time, with the route's hash tag). One replica at a time (lease
//! `escalate:<route>`) takes what is due, reads the event's acknowledgements
//! ([`notifications::acks::AckStore`]) and decides:
//! - the condition is met: nothing is sent, and the decision says who and when;
//! - otherwise: the deliveries are queued as a route without escalation queues them (the same
//!   keys, so exactly once, digests aside, backoff and dead letters unchanged), then the
//!   decision is recorded.
//!
//! The decision rests on stored state only: a restart, a kill -9 or a second replica takes the
//! held deliveries where they are. Queueing twice is harmless (the keys), and the decision is
//! recorded once (`decide.lua` removes the held delivery in the same step).

use std::time::Duration;

use event_bus::{Envelope, Timestamp};
use notifications::acks::{Ack, AckKind, AckStore};
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    queue,
    route::Route,
    store::{Bound, Held, Hold, Lease, Queued, Store},
};

/// When a route's event is let go without a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// How long to wait, ms.
    pub after_ms: u64,
    /// The acknowledgement that stops it: `seen` or `acknowledged` (which an acknowledgement
    /// also meets).
    pub unless: AckKind,
    /// Whose: empty for anyone; `role:<role>` for a user with that role; otherwise a user id.
    pub by: Vec<String>,
}

impl Rule {
    /// The route's rule (`None` without `escalate_after_ms`); the error names the key.
    pub fn of(route: &Route) -> Result<Option<Rule>, String> {
        if route.escalate_after_ms == 0 {
            if route.unless.is_some() || !route.by.is_empty() {
                return Err("unless, by: they need escalate_after_ms".into());
            }
            return Ok(None);
        }
        if !(1_000..=86_400_000).contains(&route.escalate_after_ms) {
            return Err(format!(
                "escalate_after_ms: {} is outside 1000..=86400000 (0: send at once)",
                route.escalate_after_ms
            ));
        }
        if route.digest_window_ms != 0 {
            return Err(
                "escalate_after_ms: a digest route cannot escalate (its messages stand for many events)".into(),
            );
        }
        let unless = match route.unless.as_deref() {
            None => AckKind::Acknowledged,
            Some(u) => AckKind::parse(u).ok_or_else(|| format!("unless: {u:?} is not \"seen\" or \"acknowledged\""))?,
        };
        for b in &route.by {
            let name = b.strip_prefix("role:").unwrap_or(b);
            if name.is_empty() || name.len() > 128 {
                return Err(format!("by: {b:?}: a user id or role:<role>"));
            }
        }
        Ok(Some(Rule {
            after_ms: route.escalate_after_ms,
            unless,
            by: route.by.clone(),
        }))
    }

    /// The first of `acks` that meets the rule, if any.
    pub fn met<'a>(&self, acks: &'a [Ack]) -> Option<&'a Ack> {
        acks.iter().find(|a| {
            a.kind.meets(self.unless)
                && (self.by.is_empty()
                    || self.by.iter().any(|b| match b.strip_prefix("role:") {
                        Some(role) => a.role.as_deref() == Some(role),
                        None => a.user == *b,
                    }))
        })
    }
}

/// What an event's acknowledgements are recorded under: its id, or on the notifications'
/// channel the notification's id (reading it acknowledges it).
pub fn subject(event: &Envelope) -> String {
    if event.event_type.as_str() == notifications::NOTIFICATION {
        event.payload.id.clone()
    } else {
        event.id.to_string()
    }
}

/// The hold of `event` for route `route`, its text rendered now.
pub fn hold(rule: &Rule, event: &Envelope, text: &str) -> Hold {
    let now = Timestamp::now_ms();
    let data = serde_json::json!({"event": event, "text": text, "queued_at": now});
    Hold {
        key: format!("{}:{}", event.channel, event.id),
        due_ms: now + rule.after_ms,
        data: data.to_string(),
    }
}

/// One escalating route's decisions.
#[derive(Clone, Debug)]
pub struct Escalator {
    /// The route's name.
    pub route: String,
    /// Its rule.
    pub rule: Rule,
    /// Its destinations.
    pub destinations: Vec<String>,
    /// The held deliveries.
    pub held: Held,
    /// The acknowledgements.
    pub acks: AckStore,
    /// The rest of the state (the lease, the outboxes).
    pub store: Store,
    /// Each outbox's bound.
    pub bound: Bound,
    /// This replica.
    pub instance: String,
    /// The lease's life, in ms.
    pub lease_ttl_ms: u64,
    /// The idle wait, in ms.
    pub poll_ms: u64,
    /// The metrics.
    pub metrics: Metrics,
}

impl Escalator {
    /// Decides until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let holder = format!("{}/{}", self.instance, uuid::Uuid::new_v4().simple());
        let mut lease = Lease::new(format!("escalate:{}", self.route), self.lease_ttl_ms, holder);
        crate::pace::repeat!(
            stop,
            match self.step(&mut lease).await {
                Ok(busy) => Ok(if busy {
                    Duration::ZERO
                } else {
                    Duration::from_millis(self.poll_ms.min(250))
                }),
                Err(e) => {
                    lease.forget();
                    Err(e)
                }
            },
            |e| tracing::warn!(route = %self.route, error = %e, "sinks: escalation failed; trying again")
        );
    }

    /// Decides what is due; whether there may be more at once.
    async fn step(&self, lease: &mut Lease) -> Result<bool, String> {
        if !lease.hold(&self.store).await.map_err(|e| e.to_string())? {
            return Ok(false);
        }
        let now = Timestamp::now_ms();
        let due = self.held.due(&self.route, now, 100).await.map_err(|e| e.to_string())?;
        let busy = due.len() == 100;
        for (key, due_ms, data) in due {
            self.decide(&key, due_ms, &data).await?;
        }
        Ok(busy)
    }

    /// Decides one held delivery.
    async fn decide(&self, key: &str, due_ms: u64, data: &str) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Data {
            event: Envelope,
            text: String,
        }
        let Ok(d) = serde_json::from_str::<Data>(data) else {
            // Unreadable (another version's): let it go, saying so.
            let why = vec![("decision", "dropped".to_owned()), ("why", "unreadable".to_owned())];
            self.held
                .decide(&self.route, key, &why)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        };
        let ev = &d.event;
        let subject = subject(ev);
        let acks = self.acks.list(&ev.channel, &subject).await.map_err(|e| e.to_string())?;
        let mut decision = vec![
            ("channel", ev.channel.logical().to_owned()),
            ("event_id", ev.id.to_string()),
            ("subject", subject),
            ("text", d.text.clone()),
            ("due_at", due_ms.to_string()),
            ("decided_at", Timestamp::now_ms().to_string()),
        ];
        let outcome = match self.rule.met(&acks) {
            Some(a) => {
                decision.extend([
                    ("decision", "suppressed".to_owned()),
                    ("by", a.user.clone()),
                    ("kind", a.kind.as_str().to_owned()),
                    ("acked_at", a.at.to_string()),
                ]);
                "suppressed"
            }
            None => {
                let mut batch: Vec<Queued> = Vec::new();
                for dest in &self.destinations {
                    let k = crate::key::of(&ev.channel, ev.id, dest);
                    batch.push(queue::delivery(dest, k, &self.route, &d.text, 1, ev));
                }
                // Queued before the decision: a crash in between queues them again, which
                // their keys make harmless.
                queue::flush(&self.store, self.bound, &self.metrics, batch)
                    .await
                    .map_err(|e| e.to_string())?;
                let why = format!("no {} within {} ms", self.rule.unless.as_str(), self.rule.after_ms);
                decision.extend([("decision", "sent".to_owned()), ("why", why)]);
                "sent"
            }
        };
        if self
            .held
            .decide(&self.route, key, &decision)
            .await
            .map_err(|e| e.to_string())?
        {
            self.metrics
                .escalations
                .with_label_values(&[&self.route, outcome])
                .inc();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(user: &str, kind: AckKind, role: Option<&str>) -> Ack {
        Ack {
            user: user.into(),
            kind,
            role: role.map(Into::into),
            at: 1,
        }
    }

    fn rule(unless: Option<&str>, by: &[&str]) -> Rule {
        let route = Route {
            escalate_after_ms: 60_000,
            unless: unless.map(Into::into),
            by: by.iter().map(|b| (*b).to_owned()).collect(),
            ..Default::default()
        };
        Rule::of(&route).unwrap().unwrap()
    }

    #[test]
    fn whose_acknowledgement_stops_an_escalation() {
        let seen = [ack("bob", AckKind::Seen, None)];
        let acked = [
            ack("bob", AckKind::Seen, None),
            ack("bob", AckKind::Acknowledged, Some("ops")),
        ];
        // Acknowledged, by anyone (the default): seeing is not enough.
        assert!(rule(None, &[]).met(&seen).is_none());
        assert_eq!(rule(None, &[]).met(&acked).map(|a| a.kind), Some(AckKind::Acknowledged));
        // Seen: an acknowledgement is a sighting too.
        assert!(rule(Some("seen"), &[]).met(&seen).is_some());
        // By a role, or by named users.
        assert!(rule(None, &["role:ops"]).met(&acked).is_some());
        assert!(rule(None, &["role:admin"]).met(&acked).is_none());
        assert!(rule(None, &["alice", "bob"]).met(&acked).is_some());
        assert!(rule(None, &["alice"]).met(&acked).is_none());
    }

    #[test]
    fn a_wrong_rule_names_its_key() {
        let bad = |route: Route| Rule::of(&route).unwrap_err();
        let r = |ms| Route {
            escalate_after_ms: ms,
            ..Default::default()
        };
        assert!(bad(r(10)).starts_with("escalate_after_ms:"));
        assert!(bad(Route {
            unless: Some("seen".into()),
            ..r(0)
        })
        .starts_with("unless, by:"));
        assert!(bad(Route {
            unless: Some("clicked".into()),
            ..r(5_000)
        })
        .starts_with("unless:"));
        assert!(bad(Route {
            digest_window_ms: 1_000,
            ..r(5_000)
        })
        .starts_with("escalate_after_ms:"));
        assert!(bad(Route {
            by: vec!["role:".into()],
            ..r(5_000)
        })
        .starts_with("by:"));
        assert_eq!(Rule::of(&r(0)), Ok(None));
    }
}
