//! The sinks' state in this process, for `make run` on the memory bus: the same operations as
//! [`super::RedisStore`] with the same meaning, one replica, gone at exit. Bounded: an outbox
//! keeps its [`super::Bound`] as the Redis one does (the oldest go to the dead letters), and
//! at most `MAX_OUTBOX` deliveries wait whatever the bound, `MAX_DEAD` dead letters are kept,
//! and `MAX_KEYS` queueing markers are remembered.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use event_bus::{Channel, EventId, Timestamp};
use notifications::PushStore;

use super::entry::{Bound, Enqueued, Entry, Peek, Queued, StoreError};

const MAX_OUTBOX: usize = 10_000;
const MAX_DEAD: usize = 1_000;
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
struct Destination {
    kind: String,
    outbox: VecDeque<Entry>,
    attempts: HashMap<String, u64>,
    dead: VecDeque<Entry>,
    bucket: Option<(f64, u64)>,
    backoff_until: Option<u64>,
    disabled: Option<String>,
    accepted_at: Option<u64>,
    error: Option<(String, u64)>,
    pushed: HashMap<String, HashSet<String>>,
    invalid: (u64, u64),
}

impl Destination {
    /// Puts `letter` (already off the outbox) among the dead letters with `why`, its attempts
    /// forgotten; the oldest letter goes past `MAX_DEAD`.
    fn bury(&mut self, mut letter: Entry, why: &str) {
        self.attempts
            .remove(letter.fields.get("key").map_or("", String::as_str));
        letter.fields.insert("why".into(), why.to_owned());
        self.dead.push_back(letter);
        if self.dead.len() > MAX_DEAD {
            self.dead.pop_front();
        }
    }
}

/// Takes a token of `d`'s bucket, as the Redis script does: the ms to wait first.
fn take(d: &mut Destination, rate: f64, burst: f64, now_ms: u64) -> u64 {
    let (tokens, at) = d.bucket.unwrap_or((burst, now_ms));
    let mut tokens = burst.min(tokens + now_ms.saturating_sub(at) as f64 * rate / 1000.0);
    let wait = if tokens >= 1.0 {
        tokens -= 1.0;
        0
    } else {
        ((1.0 - tokens) * 1000.0 / rate).ceil() as u64
    };
    d.bucket = Some((tokens, now_ms));
    wait
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    positions: HashMap<String, EventId>,
    leases: HashMap<String, (String, u64)>,
    queued: HashSet<String>,
    queued_order: VecDeque<String>,
    destinations: std::collections::BTreeMap<String, Destination>,
}

/// The store in this process.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    push: PushStore,
    held: super::held::MemoryHeld,
}

impl MemoryStore {
    /// A new store; Web Push subscriptions from `push` (the gateway's, in the same process).
    pub fn new(push: PushStore) -> MemoryStore {
        MemoryStore {
            state: Arc::default(),
            push,
            held: super::held::MemoryHeld::default(),
        }
    }

    /// The deliveries held for escalation.
    pub fn held(&self) -> super::held::MemoryHeld {
        self.held.clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut s))
    }

    fn dest<T>(&self, d: &str, f: impl FnOnce(&mut Destination) -> T) -> Result<T, StoreError> {
        self.with(|s| f(s.destinations.entry(d.to_owned()).or_default()))
    }

    /// Each destination's state, as the gateway's `/api/sinks/destinations` lists it.
    pub fn view(&self) -> Vec<serde_json::Value> {
        let now = Timestamp::now_ms();
        self.with(|s| {
            s.destinations
                .iter()
                .filter(|(_, d)| !d.kind.is_empty())
                .map(|(name, d)| {
                    let backoff = d.backoff_until.filter(|u| *u > now);
                    let state = match (&d.disabled, backoff) {
                        (Some(_), _) => "disabled",
                        (None, Some(_)) => "backing_off",
                        (None, None) => "healthy",
                    };
                    serde_json::json!({
                        "name": name, "kind": d.kind, "state": state,
                        "disabled_because": d.disabled, "backing_off_until": backoff,
                        "backlog": d.outbox.len(), "dead_letters": d.dead.len(),
                        "last_accepted_at": d.accepted_at,
                        "last_error": d.error.as_ref().map(|e| &e.0),
                        "last_error_at": d.error.as_ref().map(|e| e.1),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
    }

    pub(super) async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let now = Timestamp::now_ms();
        self.with(|s| match s.leases.get(name) {
            Some((h, until)) if h != holder && *until > now => false,
            _ => {
                s.leases.insert(name.to_owned(), (holder.to_owned(), now + ttl_ms));
                true
            }
        })
    }

    pub(super) async fn position(&self, channel: &Channel) -> Result<Option<EventId>, StoreError> {
        self.with(|s| s.positions.get(channel.as_str()).copied())
    }

    pub(super) async fn set_position(&self, channel: &Channel, id: EventId) -> Result<(), StoreError> {
        self.with(|s| {
            s.positions.insert(channel.as_str().to_owned(), id);
        })
    }

    pub(super) async fn enqueue(&self, q: &Queued, bound: Bound) -> Result<Enqueued, StoreError> {
        let (d, key, fields) = (q.destination.as_str(), q.key.as_str(), &q.fields);
        let now = Timestamp::now_ms();
        self.with(|s| {
            let marker = format!("{d}\u{0}{key}");
            if !s.queued.insert(marker.clone()) {
                return Enqueued::default();
            }
            s.queued_order.push_back(marker);
            if s.queued_order.len() > MAX_KEYS {
                let old = s.queued_order.pop_front().unwrap_or_default();
                s.queued.remove(&old);
            }
            s.seq += 1;
            let entry = Entry {
                id: format!("{now}-{}", s.seq),
                fields: fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            };
            let dest = s.destinations.entry(d.to_owned()).or_default();
            dest.outbox.push_back(entry);
            let max = (bound.max_backlog as usize).min(MAX_OUTBOX);
            let oldest_allowed = now.saturating_sub(bound.max_age_ms);
            let mut dead = 0;
            while let Some(oldest) = dest.outbox.front() {
                let queued_ms: u64 = oldest.id.split('-').next().and_then(|t| t.parse().ok()).unwrap_or(now);
                let why = if dest.outbox.len() > max {
                    "the outbox was full (delivery.max_backlog)"
                } else if queued_ms < oldest_allowed {
                    "older than delivery.max_age_secs"
                } else {
                    break;
                };
                let letter = dest.outbox.pop_front().expect("just seen");
                dest.bury(letter, why);
                dead += 1;
            }
            Enqueued { new: true, dead }
        })
    }

    pub(super) async fn enqueue_many(&self, batch: &[Queued], bound: Bound) -> Result<Vec<Enqueued>, StoreError> {
        let mut out = Vec::with_capacity(batch.len());
        for q in batch {
            out.push(self.enqueue(q, bound).await?);
        }
        Ok(out)
    }

    async fn done(&self, d: &str, entry: &Entry) -> Result<(), StoreError> {
        self.dest(d, |d| {
            d.outbox.retain(|e| e.id != entry.id);
            d.attempts.remove(entry.fields.get("key").map_or("", String::as_str));
        })
    }

    pub(super) async fn dead_letter(&self, d: &str, entry: &Entry, why: &str) -> Result<(), StoreError> {
        self.dest(d, |d| {
            d.outbox.retain(|e| e.id != entry.id);
            d.bury(entry.clone(), why);
        })
    }

    pub(super) async fn dead_letters(&self, d: &str, limit: u64) -> Result<Vec<Entry>, StoreError> {
        self.dest(d, |d| d.dead.iter().take(limit as usize).cloned().collect())
    }

    pub(super) async fn replay(&self, d: &str) -> Result<usize, StoreError> {
        self.dest(d, |d| {
            let n = d.dead.len();
            while let Some(mut e) = d.dead.pop_front() {
                e.fields.remove("why");
                d.outbox.push_back(e);
            }
            n
        })
    }

    pub(super) async fn set_backoff(&self, d: &str, until_ms: u64, _now_ms: u64) -> Result<(), StoreError> {
        self.dest(d, |d| d.backoff_until = Some(until_ms))
    }

    pub(super) async fn disable(&self, d: &str, why: &str) -> Result<(), StoreError> {
        self.dest(d, |d| d.disabled = Some(why.to_owned()))
    }

    pub(super) async fn enable(&self, d: &str) -> Result<(), StoreError> {
        self.dest(d, |d| d.disabled = None)
    }

    pub(super) async fn announce(&self, destinations: &[(&str, &str)]) -> Result<(), StoreError> {
        self.with(|s| {
            for (name, kind) in destinations {
                s.destinations.entry((*name).to_owned()).or_default().kind = (*kind).to_owned();
            }
        })
    }

    pub(super) async fn note(&self, d: &str, error: Option<&str>, now_ms: u64) -> Result<(), StoreError> {
        self.dest(d, |d| match error {
            None => d.accepted_at = Some(now_ms),
            Some(e) => d.error = Some((e.chars().take(300).collect(), now_ms)),
        })
    }

    pub(super) async fn subscriptions(&self, user: &str) -> Result<Vec<notifications::push::Subscription>, StoreError> {
        self.push.list(user).await.map_err(|e| StoreError(e.to_string()))
    }

    pub(super) async fn unsubscribe(&self, user: &str, id: &str) -> Result<(), StoreError> {
        self.push
            .remove(user, id)
            .await
            .map(drop)
            .map_err(|e| StoreError(e.to_string()))
    }

    pub(super) async fn pushed(&self, d: &str, key: &str) -> Result<HashSet<String>, StoreError> {
        self.dest(d, |d| d.pushed.get(key).cloned().unwrap_or_default())
    }

    pub(super) async fn mark_pushed(&self, d: &str, key: &str, id: &str) -> Result<(), StoreError> {
        self.dest(d, |d| {
            d.pushed.entry(key.to_owned()).or_default().insert(id.to_owned());
        })
    }

    pub(super) async fn next(&self, d: &str, rate: f64, burst: f64, now_ms: u64) -> Result<Peek, StoreError> {
        self.dest(d, |d| {
            let mut peek = Peek {
                backlog: d.outbox.len() as u64,
                disabled: d.disabled.clone(),
                backoff: d.backoff_until.filter(|u| *u > now_ms),
                ..Peek::default()
            };
            if peek.disabled.is_some() || peek.backoff.is_some() || d.outbox.is_empty() {
                return peek;
            }
            peek.wait_ms = take(d, rate, burst, now_ms);
            if peek.wait_ms == 0 {
                let entry = d.outbox.front().cloned();
                if let Some(e) = &entry {
                    let n = d
                        .attempts
                        .entry(e.fields.get("key").cloned().unwrap_or_default())
                        .or_default();
                    *n += 1;
                    peek.attempts = *n;
                }
                peek.oldest = entry;
            }
            peek
        })
    }

    pub(super) async fn finish(
        &self,
        d: &str,
        entry: &Entry,
        now_ms: u64,
        lease: &str,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let held = self.with(|s| {
            s.leases
                .get(lease)
                .is_some_and(|(h, until)| h == holder && *until > now_ms)
        })?;
        if !held {
            return Ok(false);
        }
        self.done(d, entry).await?;
        self.note(d, None, now_ms).await?;
        Ok(true)
    }

    pub(super) async fn count_invalid(&self, d: &str, window_ms: u64, _len_ms: u64) -> Result<u64, StoreError> {
        self.dest(d, |d| {
            if d.invalid.0 != window_ms {
                d.invalid = (window_ms, 0);
            }
            d.invalid.1 += 1;
            d.invalid.1
        })
    }

    pub(super) async fn forget_pushed(&self, d: &str, key: &str) -> Result<(), StoreError> {
        self.dest(d, |d| drop(d.pushed.remove(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(key: &str) -> Queued {
        Queued {
            destination: "d".into(),
            key: key.to_owned(),
            fields: vec![("key", key.to_owned()), ("text", "t".into())],
        }
    }

    fn bound(max_backlog: u64) -> Bound {
        Bound {
            max_backlog,
            max_age_ms: 60_000,
        }
    }

    #[tokio::test]
    async fn queueing_is_idempotent_and_letters_replay() {
        let s = MemoryStore::new(PushStore::Memory(Arc::default()));
        assert!(s.enqueue(&queued("k1"), bound(10)).await.unwrap().new);
        assert!(
            !s.enqueue(&queued("k1"), bound(10)).await.unwrap().new,
            "a re-read queues nothing"
        );
        assert!(s.enqueue(&queued("k2"), bound(10)).await.unwrap().new);
        let p = s.next("d", 1.0, 2.0, 1000).await.unwrap();
        let first = p.oldest.unwrap();
        assert_eq!((first.fields["key"].as_str(), p.attempts, p.backlog), ("k1", 1, 2));
        assert_eq!(s.next("d", 1.0, 2.0, 1000).await.unwrap().attempts, 2);
        let empty = s.next("d", 1.0, 2.0, 1000).await.unwrap();
        assert_eq!((empty.wait_ms, empty.oldest), (1000, None), "the bucket is empty");
        s.dead_letter("d", &first, "HTTP 400").await.unwrap();
        assert_eq!(s.dead_letters("d", 10).await.unwrap()[0].fields["why"], "HTTP 400");
        assert_eq!(s.replay("d").await.unwrap(), 1);
        assert_eq!(s.next("d", 1.0, 2.0, 5000).await.unwrap().backlog, 2);
        assert!(s.lease("l", "a", 1000).await.unwrap());
        assert!(!s.lease("l", "b", 1000).await.unwrap());
        s.announce(&[("d", "webhook")]).await.unwrap();
        s.disable("d", "HTTP 410").await.unwrap();
        assert_eq!(s.view()[0]["state"], "disabled");
    }

    #[tokio::test]
    async fn taking_a_delivery_off_is_fenced_by_the_lease() {
        let s = MemoryStore::new(PushStore::Memory(Arc::default()));
        s.enqueue(&queued("k1"), bound(10)).await.unwrap();
        let entry = s.next("d", 1.0, 2.0, 1000).await.unwrap().oldest.unwrap();
        let now = Timestamp::now_ms();
        assert!(s.lease("dest:d", "b/2", 60_000).await.unwrap());
        assert!(
            !s.finish("d", &entry, now, "dest:d", "a/1").await.unwrap(),
            "a former holder finished a delivery under another's lease"
        );
        assert_eq!(s.next("d", 1.0, 2.0, 5000).await.unwrap().backlog, 1, "still waiting");
        assert!(s.finish("d", &entry, now, "dest:d", "b/2").await.unwrap());
        assert_eq!(s.next("d", 1.0, 2.0, 9000).await.unwrap().backlog, 0);
    }

    #[tokio::test]
    async fn a_disabled_outbox_is_bounded_and_its_overflow_is_a_dead_letter() {
        let s = MemoryStore::new(PushStore::Memory(Arc::default()));
        s.disable("d", "HTTP 401").await.unwrap();
        let mut dead = 0;
        for i in 0..5 {
            dead += s.enqueue(&queued(&format!("k{i}")), bound(3)).await.unwrap().dead;
        }
        assert_eq!(dead, 2);
        let letters = s.dead_letters("d", 10).await.unwrap();
        let keys: Vec<_> = letters.iter().map(|l| l.fields["key"].as_str()).collect();
        assert_eq!(keys, ["k0", "k1"], "the oldest go, to the dead letters");
        assert!(letters[0].fields["why"].contains("max_backlog"));
    }
}
