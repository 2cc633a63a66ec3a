//! Notifications in this process (the memory bus: `make run`, tests). Nothing expires but by
//! the per-user cap: a process does not live a retention period of memory mode.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::contract::{Store, StoreError};
use crate::{
    config::IDEMPOTENCY_SECS,
    model::{Created, Marked, Notification, Page, PageQuery, Stored},
};

/// Idempotency keys one user may have before the expired ones are swept.
const IDEM_SWEEP_AT: usize = 10_000;

/// Every user's notifications, in this process. Cheap to clone: clones share them.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    users: Arc<Mutex<HashMap<String, UserBox>>>,
}

/// One user's notifications.
#[derive(Debug, Default)]
struct UserBox {
    seq: u64,
    items: BTreeMap<u64, Stored>,
    by_id: HashMap<String, u64>,
    unread: BTreeSet<u64>,
    idem: HashMap<String, (String, Instant)>,
}

impl UserBox {
    fn notification(&self, seq: u64) -> Notification {
        Notification {
            stored: self.items[&seq].clone(),
            read: !self.unread.contains(&seq),
        }
    }

    /// The notification a fresh use of `key` created, if any.
    fn remembered(&self, key: &str, now: Instant) -> Option<u64> {
        let (id, at) = self.idem.get(key)?;
        if now.duration_since(*at).as_secs() >= IDEMPOTENCY_SECS {
            return None;
        }
        self.by_id.get(id).copied()
    }
}

impl Store for MemoryStore {
    async fn create(&self, n: Stored, idem: Option<&str>, cap: usize, _ttl: Duration) -> Result<Created, StoreError> {
        let mut users = self.users.lock().unwrap();
        let b = users.entry(n.user_id.clone()).or_default();
        let now = Instant::now();
        if b.idem.len() > IDEM_SWEEP_AT {
            b.idem
                .retain(|_, (_, at)| now.duration_since(*at).as_secs() < IDEMPOTENCY_SECS);
        }
        if let Some(seq) = idem.and_then(|key| b.remembered(key, now)) {
            return Ok(Created {
                notification: b.notification(seq),
                unread: b.unread.len() as u64,
                new: false,
            });
        }
        b.seq += 1;
        let seq = b.seq;
        b.by_id.insert(n.id.clone(), seq);
        b.unread.insert(seq);
        b.items.insert(seq, n.clone());
        if let Some(key) = idem {
            b.idem.insert(key.to_owned(), (n.id.clone(), now));
        }
        while b.items.len() > cap {
            let (old, s) = b.items.pop_first().expect("not empty");
            b.by_id.remove(&s.id);
            b.unread.remove(&old);
        }
        Ok(Created {
            notification: Notification { stored: n, read: false },
            unread: b.unread.len() as u64,
            new: true,
        })
    }

    async fn list(&self, user: &str, q: PageQuery<'_>) -> Result<Option<Page>, StoreError> {
        let PageQuery {
            unread_only,
            limit,
            before,
        } = q;
        let users = self.users.lock().unwrap();
        let Some(b) = users.get(user) else {
            return Ok(before.is_none().then(Page::empty));
        };
        let upper = match before {
            None => u64::MAX,
            Some(id) => match b.by_id.get(id) {
                Some(s) => *s,
                None => return Ok(None),
            },
        };
        let notifications = if unread_only {
            b.unread
                .range(..upper)
                .rev()
                .take(limit)
                .map(|s| b.notification(*s))
                .collect()
        } else {
            b.items
                .range(..upper)
                .rev()
                .take(limit)
                .map(|(s, _)| b.notification(*s))
                .collect()
        };
        Ok(Some(Page {
            notifications,
            unread: b.unread.len() as u64,
            total: b.items.len() as u64,
        }))
    }

    async fn mark_read(&self, user: &str, id: Option<&str>) -> Result<Marked, StoreError> {
        let mut users = self.users.lock().unwrap();
        let Some(b) = users.get_mut(user) else {
            return Ok(match id {
                Some(_) => Marked::NotFound,
                None => Marked::Done { changed: 0, unread: 0 },
            });
        };
        let changed = match id {
            None => std::mem::take(&mut b.unread).len() as u64,
            Some(id) => match b.by_id.get(id) {
                None => return Ok(Marked::NotFound),
                Some(seq) => b.unread.remove(seq) as u64,
            },
        };
        Ok(Marked::Done {
            changed,
            unread: b.unread.len() as u64,
        })
    }
}
