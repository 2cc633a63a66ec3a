//! Web Push subscriptions ([`crate::push`]) per user: in this process (the memory bus) or in
//! Redis under `<prefix>user:{<user>}:push` (hash id → JSON).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use fred::{
    clients::Client,
    interfaces::{HashesInterface, KeysInterface},
};

use super::contract::StoreError;
use crate::push::Subscription;

/// Where subscriptions are kept: this process (the memory bus) or Redis.
#[derive(Clone, Debug)]
pub enum PushStore {
    /// In this process: user → id → subscription.
    Memory(Arc<Mutex<HashMap<String, BTreeMap<String, Subscription>>>>),
    /// In Redis, under the bus prefix.
    Redis {
        /// The connection.
        client: Client,
        /// The key prefix.
        prefix: String,
    },
}

fn store_err(e: fred::error::Error) -> StoreError {
    StoreError(format!("push subscriptions: {e}"))
}

impl PushStore {
    /// The store that goes with `bus`.
    pub fn for_bus(bus: &event_bus::AnyBus) -> PushStore {
        match bus {
            event_bus::AnyBus::Memory(_) => PushStore::Memory(Arc::default()),
            event_bus::AnyBus::Redis(b) => PushStore::Redis {
                client: b.client().clone(),
                prefix: bus.config().prefix.clone(),
            },
        }
    }

    /// The Redis key of `user`'s subscriptions.
    pub fn key(prefix: &str, user: &str) -> String {
        format!("{prefix}user:{{{user}}}:push")
    }

    /// Stores `s` for `user` (replacing one with its id); whether it is new. Beyond `max`, the
    /// oldest go. In Redis the user's subscriptions expire `ttl` after the last subscribe, like
    /// the user's other keys (a browser subscribes again on its next visit).
    pub async fn add(&self, user: &str, s: &Subscription, max: usize, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            PushStore::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                let subs = m.entry(user.to_owned()).or_default();
                let new = subs.insert(s.id.clone(), s.clone()).is_none();
                while subs.len() > max {
                    let oldest = subs.values().min_by_key(|s| s.created_at).map(|s| s.id.clone());
                    oldest.map(|id| subs.remove(&id));
                }
                Ok(new)
            }
            PushStore::Redis { client, prefix } => {
                let key = Self::key(prefix, user);
                let json = serde_json::to_string(s).unwrap_or_default();
                let added: i64 = client.hset(&key, (s.id.as_str(), json)).await.map_err(store_err)?;
                let _: i64 = client
                    .expire(&key, ttl.as_secs().max(1) as i64, None)
                    .await
                    .map_err(store_err)?;
                let n: usize = client.hlen(&key).await.map_err(store_err)?;
                if n > max {
                    // `list` is oldest first.
                    let all = self.list(user).await?;
                    for old in &all[..all.len().saturating_sub(max)] {
                        self.remove(user, &old.id).await?;
                    }
                }
                Ok(added == 1)
            }
        }
    }

    /// `user`'s subscriptions, oldest first.
    pub async fn list(&self, user: &str) -> Result<Vec<Subscription>, StoreError> {
        let mut subs: Vec<Subscription> = match self {
            PushStore::Memory(m) => {
                let m = m.lock().unwrap_or_else(|p| p.into_inner());
                m.get(user).map(|s| s.values().cloned().collect()).unwrap_or_default()
            }
            PushStore::Redis { client, prefix } => {
                let all: HashMap<String, String> = client.hgetall(Self::key(prefix, user)).await.map_err(store_err)?;
                // A value that does not read is skipped (and replaced by the next subscribe).
                all.values().filter_map(|v| serde_json::from_str(v).ok()).collect()
            }
        };
        subs.sort_by_key(|s| (s.created_at, s.id.clone()));
        Ok(subs)
    }

    /// Removes `user`'s subscription `id`; whether there was one.
    pub async fn remove(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        match self {
            PushStore::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                Ok(m.get_mut(user).and_then(|s| s.remove(id)).is_some())
            }
            PushStore::Redis { client, prefix } => {
                let key = Self::key(prefix, user);
                let n: i64 = client.hdel(&key, id).await.map_err(store_err)?;
                let left: i64 = client.hlen(&key).await.map_err(store_err)?;
                if left == 0 {
                    let _: i64 = client.del(&key).await.map_err(store_err)?;
                }
                Ok(n == 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::check;

    const P256DH: &str = "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
    const AUTH: &str = "_ordMnz7uTCmrpBTeUV4Bw";

    #[tokio::test]
    async fn the_memory_store_keeps_the_newest_few() {
        let store = PushStore::Memory(Arc::default());
        let h = vec!["http://127.0.0.1:4000".to_owned()];
        for i in 0..4u64 {
            let s = check(&format!("http://127.0.0.1:4000/push/{i}"), P256DH, AUTH, &h, i).unwrap();
            assert!(store.add("ops", &s, 3, Duration::from_secs(60)).await.unwrap());
        }
        let left = store.list("ops").await.unwrap();
        assert_eq!(left.iter().map(|s| s.created_at).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(store.remove("ops", &left[0].id).await.unwrap());
        assert!(!store.remove("ops", &left[0].id).await.unwrap());
        assert!(store.list("someone").await.unwrap().is_empty());
    }
}
