//! Reading the bus: one task per channel a route takes, in stream order, from the position the
//! store keeps (`<prefix>sinks:position`), held by one replica at a time (a lease). Each event a
//! route takes is queued once per destination: the queueing is idempotent by the (event,
//! destination) key, so a re-read after a restart, a lost lease or a slow former holder queues
//! nothing twice. Correctness does not rest on the lease; it only saves work. A channel read the
//! first time starts at its newest event: old events are not sent to people.

use std::{sync::Arc, time::Duration};

use event_bus::{AnyBus, Broker, Channel, Envelope, EventId, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::{
    digest::{Window, Windows},
    metrics::Metrics,
    queue,
    route::Matcher,
    store::{Bound, Hold, Lease, Queued, Store},
    template::Template,
};

/// A route ready to run.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Its name.
    pub name: String,
    /// Which events.
    pub matcher: Matcher,
    /// Its message.
    pub template: Template,
    /// Its digest window, in ms (0: each event alone).
    pub digest_ms: u64,
    /// Its escalation, if it waits for the dashboards (`crate::escalate`).
    pub escalate: Option<crate::escalate::Rule>,
}

/// What the readers share.
#[derive(Clone, Debug)]
pub struct Reader {
    /// The bus.
    pub bus: AnyBus,
    /// The state.
    pub store: Store,
    /// The routes.
    pub routes: Arc<Vec<Compiled>>,
    /// The metrics.
    pub metrics: Metrics,
    /// This replica.
    pub instance: String,
    /// The lease's life, in ms.
    pub lease_ttl_ms: u64,
    /// The idle wait, in ms.
    pub poll_ms: u64,
    /// Each outbox's bound.
    pub bound: Bound,
    /// Deliveries held for escalation.
    pub held: crate::store::Held,
    /// Channels whose position is known (read, or set at the head the first time): the
    /// service is ready once all are.
    pub started: Arc<std::sync::atomic::AtomicUsize>,
}

impl Reader {
    /// Queues `event`'s deliveries: one per destination of every route that takes it alone (a
    /// destination two routes share gets it once, from the first); a digest route's window
    /// takes it instead, and the window it closes is queued; an escalating route holds it
    /// (`held`, per route index).
    pub fn route(
        &self,
        event: &Envelope,
        windows: &mut Windows,
        batch: &mut Vec<Queued>,
        held: &mut Vec<(usize, Hold)>,
    ) {
        let mut done: Vec<&str> = Vec::new();
        for (i, r) in self.routes.iter().enumerate().filter(|(_, r)| r.matcher.takes(event)) {
            if let Some(rule) = &r.escalate {
                held.push((i, crate::escalate::hold(rule, event, &r.template.render(event))));
                continue;
            }
            if r.digest_ms > 0 {
                if let Some(closed) = windows.add(i, r.digest_ms, event) {
                    self.digest(i, closed, batch);
                }
                continue;
            }
            let text = r.template.render(event);
            for d in &r.matcher.route().destinations {
                if done.contains(&d.as_str()) {
                    continue;
                }
                done.push(d);
                let key = crate::key::of(&event.channel, event.id, d);
                batch.push(queue::delivery(d, key, &r.name, &text, 1, event));
            }
        }
    }

    /// Queues a closed window of route `i` to each of its destinations as one message.
    fn digest(&self, i: usize, w: Window, batch: &mut Vec<Queued>) {
        let r = &self.routes[i];
        let last = &w.last;
        let text = crate::template::digest(&w.counts, &r.template.render(last));
        for d in &r.matcher.route().destinations {
            let key = crate::key::of_window(&last.channel, &r.name, w.start_ms, d);
            batch.push(queue::delivery(d, key, &r.name, &text, w.count, last));
        }
    }

    /// Follows `channel` until `stop`.
    pub async fn run(self, channel: Channel, stop: CancellationToken) {
        let mut lease = Lease::new(format!("channel:{channel}"), self.lease_ttl_ms, self.instance.clone());
        let mut pos: Option<EventId> = None;
        let mut windows = Windows::default();
        let mut counted = false;
        crate::pace::repeat!(
            stop,
            match self.round(&channel, &mut lease, &mut pos, &mut windows).await {
                Ok(busy) => {
                    if !counted {
                        // Held here or elsewhere, the channel has a position from now on.
                        counted = true;
                        self.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(if busy {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(self.poll_ms)
                    })
                }
                Err(e) => {
                    pos = None;
                    lease.forget();
                    windows.clear(); // read again from the stored position, windows whole
                    Err(e)
                }
            },
            |e| tracing::warn!(%channel, error = %e, "sinks: reading the channel failed; trying again")
        );
    }

    /// One page; whether there may be more right away.
    async fn round(
        &self,
        channel: &Channel,
        lease: &mut Lease,
        pos: &mut Option<EventId>,
        windows: &mut Windows,
    ) -> Result<bool, String> {
        if !lease.hold(&self.store).await.map_err(|e| e.to_string())? {
            *pos = None; // the holder moves the position; read it again when taking over
            windows.clear();
            if self.store.position(channel).await.map_err(|e| e.to_string())?.is_none() {
                return Err("the holder has not started the channel yet".into());
            }
            return Ok(false);
        }
        let after = match *pos {
            Some(p) => p,
            None => match self.store.position(channel).await.map_err(|e| e.to_string())? {
                Some(p) => p,
                None => {
                    let head = self
                        .bus
                        .head(std::slice::from_ref(channel))
                        .await
                        .map_err(|e| e.to_string())?;
                    let start = head.get(channel).unwrap_or(EventId::ZERO);
                    self.store
                        .set_position(channel, start)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::info!(%channel, position = %start, "sinks: a new channel starts at its newest event");
                    start
                }
            },
        };
        let page = self.bus.replay(channel, after, 200).await.map_err(|e| e.to_string())?;
        if let Some(resume) = page.resync {
            tracing::warn!(%channel, position = %after, continue_from = %resume, "sinks: events after the position were trimmed before they were routed");
            self.store
                .set_position(channel, resume)
                .await
                .map_err(|e| e.to_string())?;
            *pos = Some(resume);
            return Ok(true);
        }
        let (mut batch, mut held) = (Vec::new(), Vec::new());
        for event in &page.events {
            self.route(event, windows, &mut batch, &mut held);
        }
        // Held before the position moves past them, as the deliveries are queued.
        for (i, r) in self.routes.iter().enumerate() {
            let mine: Vec<Hold> = held.iter().filter(|(j, _)| *j == i).map(|(_, h)| h.clone()).collect();
            let now = self.held.hold(&r.name, &mine).await.map_err(|e| e.to_string())?;
            let n = now.iter().filter(|h| **h).count() as u64;
            self.metrics.held.with_label_values(&[&r.name]).inc_by(n);
        }
        for (i, w) in windows.due(Timestamp::now_ms(), page.last) {
            self.digest(i, w, &mut batch);
        }
        // Queued before the position moves past them: a crash in between queues them again,
        // which their keys make harmless.
        queue::flush(&self.store, self.bound, &self.metrics, batch)
            .await
            .map_err(|e| e.to_string())?;
        // Never past an open window's first event: a restart reads the window whole again.
        let stored = windows
            .first()
            .map_or(page.last, |f| page.last.min(crate::digest::just_before(f)));
        if page.last > after {
            self.store
                .set_position(channel, stored)
                .await
                .map_err(|e| e.to_string())?;
        }
        let lag = if page.at_head {
            0.0
        } else {
            Timestamp::now_ms().saturating_sub(page.last.ms) as f64 / 1000.0
        };
        self.metrics.lag.with_label_values(&[channel.as_str()]).set(lag);
        *pos = Some(page.last);
        Ok(!page.at_head)
    }
}
