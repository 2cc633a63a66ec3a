//! Delivering: one task per destination, held by one replica at a time (a lease), taking its
//! outbox oldest first. A request waits for the destination's token bucket (shared by all
//! replicas, in Redis) and its backoff (set by whichever replica was told to wait, so a
//! `Retry-After` holds for all); every request has a deadline and follows no redirect. The
//! answer's [`Outcome`] decides: accepted (off the outbox), retry (backoff: the provider's hint,
//! else exponential with jitter; a dead letter after `max_attempts`), disable (the destination
//! stops until `sinks enable`), dead letter. A delivery is at least once on the wire, with the
//! same idempotency key every time: receivers that honour it see it once.

use std::time::Duration;

use event_bus::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::{
    config::DeliverySettings,
    destination::{Answer, Kind, Message, Outcome, Wire},
    metrics::Metrics,
    store::{Entry, Lease, Store},
};

/// The window of the invalid-request budget (Discord's: 10 minutes).
const INVALID_WINDOW_MS: u64 = 600_000;

/// The largest answer body read (what an outcome needs: an error code, a retry hint).
const MAX_ANSWER: usize = 64 * 1024;

/// One destination's delivery loop.
#[derive(Debug)]
pub struct Deliverer {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Box<dyn Kind>,
    /// Requests per second, all replicas together.
    pub rate: f64,
    /// The state.
    pub store: Store,
    /// The settings.
    pub settings: DeliverySettings,
    /// The metrics.
    pub metrics: Metrics,
    /// This replica.
    pub instance: String,
}

/// The delay before attempt `attempts + 1`: doubling from `initial`, at most `max`, with 20%
/// jitter either way (so replicas and destinations do not retry in step).
pub fn backoff(settings: &DeliverySettings, attempts: u64) -> Duration {
    let doubled = settings
        .backoff_initial_ms
        .saturating_mul(1 << attempts.saturating_sub(1).min(30));
    let base = doubled.min(settings.backoff_max_ms) as f64;
    let r = uuid::Uuid::new_v4().as_bytes()[0] as f64 / 255.0;
    Duration::from_millis((base * (0.8 + 0.4 * r)) as u64)
}

async fn send(
    http: &reqwest::Client,
    r: crate::destination::Request,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    let mut req = http.post(&r.url).body(r.body);
    for (k, v) in &r.headers {
        req = req.header(k, v);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("answer failed: {}", e.without_url()))?
    {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER - body.len())]);
        if body.len() >= MAX_ANSWER {
            break;
        }
    }
    Ok((status, headers, body))
}

impl Deliverer {
    /// Delivers until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(self.settings.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        // A token of this run's own: a replica restarted under the same INSTANCE_ID is another
        // holder, so a request of its former life cannot be finished as its own.
        let holder = format!("{}/{}", self.instance, uuid::Uuid::new_v4().simple());
        let mut lease = Lease::new(format!("dest:{}", self.name), self.settings.lease_ttl_ms, holder);
        let mut announced = false;
        crate::pace::repeat!(
            stop,
            {
                if !announced {
                    // For the dashboard; tried again while the store fails.
                    announced = self.store.announce(&[(&self.name, self.kind.kind())]).await.is_ok();
                }
                self.step(&http, &mut lease).await.map_err(|e| {
                    lease.forget();
                    e.to_string()
                })
            },
            |e| tracing::warn!(destination = %self.name, error = %e, "sinks: the store failed; trying again")
        );
    }

    /// One delivery, or the time to wait before looking again.
    async fn step(&self, http: &reqwest::Client, lease: &mut Lease) -> Result<Duration, crate::store::StoreError> {
        let (s, d, m) = (&self.store, self.name.as_str(), &self.metrics);
        let idle = Duration::from_millis(self.settings.poll_ms);
        if !lease.hold(s).await? {
            return Ok(idle.max(Duration::from_millis(self.settings.lease_ttl_ms / 3)));
        }
        let now = Timestamp::now_ms();
        let peek = s.next(d, self.rate, self.rate.max(1.0), now).await?;
        m.backlog.with_label_values(&[d]).set(peek.backlog as i64);
        if peek.disabled.is_some() {
            m.disabled.with_label_values(&[d]).set(1);
            return Ok(Duration::from_secs(1));
        }
        m.disabled.with_label_values(&[d]).set(0);
        if let Some(until) = peek.backoff {
            return Ok(Duration::from_millis(until.saturating_sub(now).min(1000)));
        }
        if peek.wait_ms > 0 {
            return Ok(Duration::from_millis(peek.wait_ms));
        }
        let Some(entry) = peek.oldest else {
            return Ok(idle);
        };
        let attempts = peek.attempts;
        let queued_at: u64 = entry
            .fields
            .get("queued_at")
            .and_then(|v| v.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(queued_at) > self.settings.max_age_secs * 1000 {
            self.give_up(&entry, "older than delivery.max_age_secs").await?;
            return Ok(Duration::ZERO);
        }
        let message = match Message::of_entry(&entry.fields) {
            Ok(msg) => msg,
            Err(e) => {
                self.give_up(&entry, &e).await?;
                return Ok(Duration::ZERO);
            }
        };
        let outcome = if let Some(users) = self.kind.subscribers() {
            match self.fan_out(http, users, &message, &entry, lease).await? {
                Some(o) => o,
                None => return Ok(idle),
            }
        } else {
            self.one(http, self.kind.request(&message), lease).await
        };
        self.settle(outcome, attempts, &entry, &message, lease).await?;
        Ok(Duration::ZERO)
    }

    /// Sends one request (or mail), renewing the lease while it is in flight (a request may
    /// take longer than a third of the lease's life; the configuration makes the lease outlive
    /// the longest request even if every renewal failed); what the answer means.
    async fn one(&self, http: &reqwest::Client, built: Result<Wire, String>, lease: &mut Lease) -> Outcome {
        let send = self.send(http, built);
        tokio::pin!(send);
        loop {
            tokio::select! {
                outcome = &mut send => return outcome,
                _ = tokio::time::sleep(lease.renew_every()) => {
                    // A failed renewal is not the request's failure: `finish` is fenced.
                    if !matches!(lease.hold(&self.store).await, Ok(true)) {
                        tracing::warn!(destination = %self.name, "sinks: the lease could not be renewed during a request");
                    }
                }
            }
        }
    }

    /// Sends one request (or mail); what the answer means.
    async fn send(&self, http: &reqwest::Client, built: Result<Wire, String>) -> Outcome {
        match built {
            Err(e) => Outcome::DeadLetter(format!("cannot build the request: {e}")),
            Ok(Wire::Mail(mail)) => {
                let timeout = Duration::from_millis(self.settings.timeout_ms);
                match crate::destination::email::send(mail, timeout).await {
                    Ok((status, text)) => self.kind.outcome(&Answer {
                        status,
                        headers: &[],
                        body: &text,
                    }),
                    Err(why) => Outcome::Retry { after: None, why },
                }
            }
            Ok(Wire::Http(r)) => match send(http, r).await {
                Ok((status, headers, body)) => {
                    let answer = Answer {
                        status,
                        headers: &headers,
                        body: &body,
                    };
                    let outcome = self.kind.outcome(&answer);
                    if self.kind.counts_as_invalid(&answer) {
                        self.spend_invalid(outcome).await
                    } else {
                        outcome
                    }
                }
                Err(why) => Outcome::Retry { after: None, why },
            },
        }
    }

    /// Counts an invalid answer against the budget of its 10-minute window; past the budget, a
    /// retry waits for the next window (a disable stands).
    async fn spend_invalid(&self, outcome: Outcome) -> Outcome {
        let now = Timestamp::now_ms();
        let window = now - now % INVALID_WINDOW_MS;
        let spent = self
            .store
            .count_invalid(&self.name, window, INVALID_WINDOW_MS)
            .await
            .unwrap_or(0);
        match outcome {
            Outcome::Retry { after, why } if spent >= self.settings.invalid_budget => {
                let rest = Duration::from_millis(window + INVALID_WINDOW_MS - now);
                tracing::warn!(destination = %self.name, spent, "sinks: the invalid-request budget of this 10-minute window is spent (delivery.invalid_budget); waiting for the next");
                Outcome::Retry {
                    after: Some(after.map_or(rest, |a| a.max(rest))),
                    why: format!("{why}; the invalid-request budget is spent until the next window"),
                }
            }
            other => other,
        }
    }

    /// Sends `message` to each subscription of `users` not yet sent to (kept per delivery in
    /// the store, so a retry sends only to the ones that were not taken); gone ones are
    /// deleted. Accepted once every one took it, or refused it for good. Each request starts
    /// under the lease: `None` when it was lost (the new holder sends to the rest).
    async fn fan_out(
        &self,
        http: &reqwest::Client,
        users: &[String],
        message: &Message,
        entry: &Entry,
        lease: &mut Lease,
    ) -> Result<Option<Outcome>, crate::store::StoreError> {
        let (s, d) = (&self.store, self.name.as_str());
        let key = entry.fields.get("key").map(String::as_str).unwrap_or_default();
        let sent = s.pushed(d, key).await?;
        let mut retry: Option<Outcome> = None;
        for user in users {
            for sub in s.subscriptions(user).await? {
                if sent.contains(&sub.id) {
                    continue;
                }
                if !lease.hold(s).await? {
                    return Ok(None);
                }
                match self.one(http, self.kind.request_to(message, &sub), lease).await {
                    Outcome::Accepted { .. } => s.mark_pushed(d, key, &sub.id).await?,
                    Outcome::Unsubscribed(why) => {
                        tracing::info!(destination = d, user, subscription = %sub.id, %why, "sinks: a push subscription is gone or refuses this key; deleted");
                        self.metrics.deliveries.with_label_values(&[d, "unsubscribed"]).inc();
                        s.unsubscribe(user, &sub.id).await?;
                        s.mark_pushed(d, key, &sub.id).await?;
                    }
                    Outcome::DeadLetter(why) => {
                        tracing::warn!(destination = d, user, subscription = %sub.id, %why, "sinks: a push subscription refused the message for good; not sent to it again");
                        s.mark_pushed(d, key, &sub.id).await?;
                    }
                    Outcome::Disable(why) => return Ok(Some(Outcome::Disable(why))),
                    r @ Outcome::Retry { .. } => {
                        // The longest hint wins: every subscription is tried again after it.
                        let longer = match (&retry, &r) {
                            (Some(Outcome::Retry { after: Some(a), .. }), Outcome::Retry { after: b, .. }) => {
                                b.is_some_and(|b| b > *a)
                            }
                            _ => true,
                        };
                        if longer {
                            retry = Some(r);
                        }
                    }
                }
            }
        }
        if let Some(r) = retry {
            return Ok(Some(r));
        }
        s.forget_pushed(d, key).await?;
        Ok(Some(Outcome::Accepted { pause: None }))
    }

    /// Acts on what the destination said.
    async fn settle(
        &self,
        outcome: Outcome,
        attempts: u64,
        entry: &Entry,
        message: &Message,
        lease: &mut Lease,
    ) -> Result<(), crate::store::StoreError> {
        let (s, d, m) = (&self.store, self.name.as_str(), &self.metrics);
        match outcome {
            Outcome::Accepted { pause } => {
                m.deliveries.with_label_values(&[d, "accepted"]).inc();
                if !s
                    .finish(d, entry, Timestamp::now_ms(), lease.name(), lease.holder())
                    .await?
                {
                    // Only when this replica could not reach Redis for the lease's whole life
                    // (it outlives the longest request): the holder decides what is left.
                    tracing::warn!(
                        destination = d,
                        "sinks: a delivery was taken, but the lease was lost meanwhile; left to its holder"
                    );
                    lease.forget();
                    return Ok(());
                }
                let age =
                    Timestamp::now_ms().saturating_sub(message.event.timestamp.0.timestamp_millis().max(0) as u64);
                m.latency.with_label_values(&[d]).observe(age as f64 / 1000.0);
                if let Some(p) = pause {
                    let now = Timestamp::now_ms();
                    s.set_backoff(d, now + p.as_millis() as u64, now).await?;
                }
            }
            Outcome::Retry { after, why } => {
                m.deliveries.with_label_values(&[d, "retry"]).inc();
                s.note(d, Some(&why), Timestamp::now_ms()).await?;
                if attempts >= u64::from(self.settings.max_attempts) {
                    self.give_up(entry, &format!("{attempts} attempts; the last: {why}"))
                        .await?;
                } else {
                    let delay = after.unwrap_or_else(|| backoff(&self.settings, attempts));
                    tracing::info!(destination = d, attempts, delay_ms = delay.as_millis() as u64, %why, "sinks: delivery to be tried again");
                    let now = Timestamp::now_ms();
                    s.set_backoff(d, now + delay.as_millis() as u64, now).await?;
                }
            }
            Outcome::Disable(why) => {
                m.deliveries.with_label_values(&[d, "disabled"]).inc();
                tracing::warn!(destination = d, %why, "sinks: destination disabled; its deliveries wait (sinks enable <destination>)");
                s.disable(d, &why).await?;
                s.note(d, Some(&why), Timestamp::now_ms()).await?;
            }
            Outcome::DeadLetter(why) | Outcome::Unsubscribed(why) => self.give_up(entry, &why).await?,
        }
        Ok(())
    }

    async fn give_up(&self, entry: &Entry, why: &str) -> Result<(), crate::store::StoreError> {
        tracing::warn!(destination = %self.name, key = entry.fields.get("key").map(String::as_str).unwrap_or(""), %why, "sinks: dead letter");
        self.metrics
            .deliveries
            .with_label_values(&[&self.name, "dead_letter"])
            .inc();
        self.metrics.dead_letters.with_label_values(&[&self.name]).inc();
        self.store
            .note(&self.name, Some(&format!("dead letter: {why}")), Timestamp::now_ms())
            .await?;
        self.store.dead_letter(&self.name, entry, why).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_limit() {
        let s = DeliverySettings {
            backoff_initial_ms: 1000,
            backoff_max_ms: 10_000,
            ..Default::default()
        };
        for (attempts, base) in [(1u64, 1000u64), (2, 2000), (3, 4000), (5, 10_000), (40, 10_000)] {
            let d = backoff(&s, attempts).as_millis() as u64;
            assert!(d >= base * 8 / 10 && d <= base * 12 / 10, "attempt {attempts}: {d} ms");
        }
    }
}
