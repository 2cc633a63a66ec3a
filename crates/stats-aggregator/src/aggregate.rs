//! The work: one task per channel reading its stream in order and applying tallies, and one
//! task folding the gateways' figures in.
//!
//! # Exactness
//! A channel's entries are read in stream order and each day's hash carries the channel's
//! marker, moved by the same script call that adds the counts. Re-reading entries (after a
//! SIGKILL, a lost lease, or from a stale hint) therefore adds nothing twice, and nothing is
//! skipped because a task only moves forward from a position at or behind the markers.
//!
//! # Replicas
//! Each channel (and the gateway fold) has a lease, `<prefix>stats:lease:{<name>}`, taken and
//! renewed with a small script; its holder does the work, the others wait to take over when it
//! expires. Correctness does not depend on the lease: it only saves the second replica's work.
//! A former holder that wakes up after a pause (the classic need for fencing tokens) can only
//! re-apply entries the markers already cover, which the script skips: the markers are the
//! fence. A consumer group was not used: its acknowledgements live in the stream's key, which
//! cannot change atomically with the daily hash on Redis Cluster, and it spreads one channel's
//! entries over consumers, so no single "last applied" position per day would exist.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{NaiveDate, Utc};
use event_bus::{AnyBus, Broker, Channel, EventId, Presence};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    config::AggregatorConfig,
    day::{day_start_secs, just_before, progress_field, Entry, Tally},
    fold::{baselines, samples, Known},
    metrics::Metrics,
    store::{Applied, Fold, Store, StoreError},
};

/// The lag gauge in events counts up to this many (a larger lag shows as this value).
pub const LAG_CAP: usize = 10_000;

/// The presence kind gateways announce themselves under.
pub use stats_schema::keys::GATEWAY_KIND;

/// A running aggregator: the bus it reads, the store it writes, its metrics.
#[derive(Clone, Debug)]
pub struct Aggregator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bus: AnyBus,
    store: Store,
    config: AggregatorConfig,
    metrics: Metrics,
    ready: AtomicBool,
}

impl Aggregator {
    /// An aggregator over `bus`, writing to `store`.
    pub fn new(bus: AnyBus, store: Store, config: AggregatorConfig) -> Self {
        Aggregator {
            inner: Arc::new(Inner {
                metrics: Metrics::new(&config.bus.stream_names()),
                bus,
                store,
                config,
                ready: AtomicBool::new(false),
            }),
        }
    }

    /// The store it writes.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether its last store operation worked.
    pub fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// Runs every channel task and the gateway fold until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        // Each stream on its own: a channel with partitions is several.
        for channel in self.inner.config.bus.stream_names() {
            tasks.spawn(self.clone().channel_task(channel, stop.clone()));
        }
        tasks.spawn(self.clone().gateway_task(stop.clone()));
        while tasks.join_next().await.is_some() {}
    }

    fn expire_at(&self, day: NaiveDate) -> i64 {
        day_start_secs(day) + (1 + i64::from(self.inner.config.retention_days)) * 86_400
    }

    fn store_result<T>(&self, op: &'static str, r: Result<T, StoreError>, failing: &mut bool) -> Option<T> {
        match r {
            Ok(v) => {
                self.inner.ready.store(true, Ordering::Relaxed);
                if *failing {
                    tracing::info!(op, "stats store reachable again");
                }
                *failing = false;
                Some(v)
            }
            Err(e) => {
                self.inner.ready.store(false, Ordering::Relaxed);
                self.inner.metrics.store_error(op);
                if !*failing {
                    tracing::warn!(op, error = %e, "stats store operation failed; retrying");
                }
                *failing = true;
                None
            }
        }
    }

    /// Where a channel continues: the furthest of the hint and the markers of today and
    /// yesterday (the markers are authoritative; the hint may lag but covers older days).
    async fn start_position(&self, channel: &Channel) -> Result<EventId, StoreError> {
        let store = &self.inner.store;
        let mut pos = store
            .hints()
            .await?
            .get(channel.as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(EventId::ZERO);
        let today = Utc::now().date_naive();
        for day in [today.pred_opt().unwrap_or(today), today] {
            if let Some(m) = store
                .read_day(day)
                .await?
                .get(&progress_field(channel.as_str()))
                .and_then(|v| v.parse::<EventId>().ok())
            {
                pos = pos.max(m);
            }
        }
        Ok(pos)
    }

    async fn channel_task(self, channel: Channel, stop: CancellationToken) {
        let cfg = &self.inner.config;
        let m = &self.inner.metrics;
        let lease_name = format!("channel:{channel}");
        let renew_every = cfg.lease_ttl() / 3;
        let mut held = false;
        let mut renewed = tokio::time::Instant::now();
        let mut pos: Option<EventId> = None;
        let mut failing = false;
        let mut retried_from_zero = false;
        let mut lag_counted = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            if stop.is_cancelled() {
                break;
            }
            let mut wait = cfg.poll();
            let round = async {
                if !cfg.leases {
                    held = true;
                } else if !held || renewed.elapsed() >= renew_every {
                    let r = self
                        .inner
                        .store
                        .lease(&lease_name, &cfg.instance_id, cfg.lease_ttl())
                        .await;
                    let now_held = self.store_result("lease", r, &mut failing)?;
                    if now_held != held {
                        tracing::info!(%channel, held = now_held, "channel lease changed hands");
                    }
                    held = now_held;
                    renewed = tokio::time::Instant::now();
                    m.lease_held.with_label_values(&[channel.as_str()]).set(i64::from(held));
                    if !held {
                        pos = None; // someone else moves the markers; reload when taking over
                        wait = renew_every;
                        return None;
                    }
                }
                if pos.is_none() {
                    let r = self.start_position(&channel).await;
                    pos = Some(self.store_result("start_position", r, &mut failing)?);
                    tracing::info!(%channel, position = %pos.unwrap_or_default(), "aggregating from");
                }
                let after = pos.unwrap_or_default();
                let page = match self.inner.bus.replay(&channel, after, cfg.batch).await {
                    Ok(p) => p,
                    Err(e) => {
                        self.store_result::<()>("read", Err(StoreError::from_bus(e)), &mut failing);
                        return None;
                    }
                };
                if page.resync.is_some() {
                    m.gaps.with_label_values(&[channel.as_str()]).inc();
                    // Entries after the position are gone. Count what is left: from the start
                    // when the stream was replaced (0 is then valid), else from just before the
                    // oldest entry still stored.
                    let next = match page.oldest {
                        Some(oldest) if retried_from_zero || after == EventId::ZERO => just_before(oldest),
                        Some(_) => EventId::ZERO,
                        None => EventId::ZERO,
                    };
                    retried_from_zero = next == EventId::ZERO;
                    tracing::warn!(%channel, position = %after, continue_from = %next,
                        "entries after the position were trimmed before they were counted");
                    pos = Some(next);
                    wait = Duration::ZERO;
                    return Some(());
                }
                retried_from_zero = false;
                let mut entries: Vec<Entry> = page.events.iter().cloned().map(Entry::Event).collect();
                entries.extend(page.malformed.iter().map(|(id, k)| Entry::Malformed(*id, *k)));
                entries.sort_by_key(Entry::id);
                for tally in Tally::split(&entries) {
                    self.apply(&channel, &entries, tally, &mut failing).await?;
                }
                pos = Some(page.last);
                if page.last > after {
                    let r = self.inner.store.set_hint(&channel, page.last).await;
                    self.store_result("hint", r, &mut failing);
                }
                let lag_s = if page.at_head {
                    0.0
                } else {
                    let head = self.inner.bus.head(std::slice::from_ref(&channel)).await.ok();
                    let head_ms = head.and_then(|c| c.get(&channel)).map_or(page.last.ms, |h| h.ms);
                    head_ms.saturating_sub(page.last.ms) as f64 / 1000.0
                };
                m.lag_seconds.with_label_values(&[channel.as_str()]).set(lag_s);
                if page.at_head {
                    m.lag_events.with_label_values(&[channel.as_str()]).set(0);
                } else {
                    wait = Duration::ZERO;
                    // Counting is O(lag) for Redis: once a second is plenty for a gauge.
                    if lag_counted.elapsed() >= Duration::from_secs(1) {
                        lag_counted = tokio::time::Instant::now();
                        let lag = self.count_after(&channel, page.last).await;
                        m.lag_events.with_label_values(&[channel.as_str()]).set(lag as i64);
                    }
                }
                Some(())
            };
            if round.await.is_none() && failing {
                wait = wait.max(Duration::from_millis(200));
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
    }

    /// Applies one day's tally, and the rest of it when the marker says part was applied.
    async fn apply(&self, channel: &Channel, entries: &[Entry], tally: Tally, failing: &mut bool) -> Option<()> {
        let m = &self.inner.metrics;
        let mut tally = tally;
        let expire_at = self.expire_at(tally.day);
        if expire_at <= Utc::now().timestamp() {
            // The day's hash would be gone already: entries older than the retention of the
            // statistics (a stream kept longer than the stats) are not counted again.
            return Some(());
        }
        loop {
            let r = self.inner.store.apply(channel, &tally, expire_at).await;
            match self.store_result("apply", r, failing)? {
                Applied::Done => {
                    let events = tally.incr.get("events").copied().unwrap_or(0);
                    m.events.with_label_values(&[channel.as_str()]).inc_by(events as u64);
                    for (k, n) in &tally.incr {
                        if let Some(kind) = k.strip_prefix("malformed:") {
                            m.malformed
                                .with_label_values(&[channel.as_str(), kind])
                                .inc_by(*n as u64);
                        }
                    }
                    return Some(());
                }
                Applied::Already => {
                    m.skipped.inc_by(tally.entries as u64);
                    return Some(());
                }
                Applied::Partial(marker) => {
                    let Some(rest) = Tally::after(entries, tally.day, marker) else {
                        return Some(());
                    };
                    m.skipped.inc_by((tally.entries - rest.entries) as u64);
                    tally = rest;
                }
            }
        }
    }

    /// Entries stored after `pos` (capped at [`LAG_CAP`]), for the lag metric.
    async fn count_after(&self, channel: &Channel, pos: EventId) -> usize {
        const CAP: usize = LAG_CAP;
        match self
            .inner
            .store
            .count_after(&self.inner.config.bus, channel, pos, CAP)
            .await
        {
            Ok(Some(n)) => n,
            _ => self
                .inner
                .bus
                .replay(channel, pos, CAP)
                .await
                .map(|p| p.events.len() + p.malformed.len())
                .unwrap_or(0),
        }
    }

    async fn gateway_task(self, stop: CancellationToken) {
        let cfg = &self.inner.config;
        let mut tick = tokio::time::interval(Duration::from_millis(cfg.gateway_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // Last folded value per gateway: (started_at, counters).
        let mut last: Option<Known> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let r = match cfg.leases {
                true => {
                    self.inner
                        .store
                        .lease("gateways", &cfg.instance_id, cfg.lease_ttl())
                        .await
                }
                false => Ok(true),
            };
            if self.store_result("lease", r, &mut failing) != Some(true) {
                last = None;
                continue;
            }
            let today = Utc::now().date_naive();
            if last.is_none() {
                let mut loaded = None;
                for day in [today, today.pred_opt().unwrap_or(today)] {
                    let r = self.inner.store.read_day(day).await;
                    let Some(hash) = self.store_result("read_day", r, &mut failing) else {
                        break;
                    };
                    let b = baselines(&hash);
                    if !b.is_empty() {
                        loaded = Some(b);
                        break;
                    }
                }
                last = Some(loaded.unwrap_or_default());
            }
            let roster = match self.inner.bus.roster(GATEWAY_KIND).await {
                Ok(r) => r,
                Err(e) => {
                    self.store_result::<()>("roster", Err(StoreError::from_bus(e)), &mut failing);
                    continue;
                }
            };
            let known = last.get_or_insert_with(HashMap::new);
            let (samples, connections) = samples(&roster, known, day_start_secs(today) * 1000);
            let now_ms = Utc::now().timestamp_millis() as u64;
            let r = self
                .inner
                .store
                .fold(Fold {
                    day: today,
                    expire_at: self.expire_at(today),
                    now_ms,
                    connections,
                    samples: &samples,
                })
                .await;
            if self.store_result("fold", r, &mut failing).is_some() {
                for s in samples {
                    known.insert(
                        s.instance,
                        (s.started_at, s.counters.into_iter().map(|(k, v, _)| (k, v)).collect()),
                    );
                }
            }
        }
    }
}
