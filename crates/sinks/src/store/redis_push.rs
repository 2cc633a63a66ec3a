//! The Web Push bookkeeping in Redis: users' subscriptions (the gateway stores them, in
//! [`notifications::PushStore`]'s keys) and, per delivery, the subscriptions that took it.

use fred::interfaces::{KeysInterface, SetsInterface};

use super::{
    entry::StoreError,
    redis::{err, RedisStore, QUEUED_TTL_SECS},
};

impl RedisStore {
    /// `user`'s Web Push subscriptions (stored by the gateway).
    pub async fn subscriptions(&self, user: &str) -> Result<Vec<notifications::push::Subscription>, StoreError> {
        self.push().list(user).await.map_err(|e| StoreError(e.to_string()))
    }

    /// Deletes `user`'s subscription `id` (its push service said it is gone).
    pub async fn unsubscribe(&self, user: &str, id: &str) -> Result<(), StoreError> {
        self.push()
            .remove(user, id)
            .await
            .map(drop)
            .map_err(|e| StoreError(e.to_string()))
    }

    fn push(&self) -> notifications::PushStore {
        notifications::PushStore::Redis {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// The subscriptions delivery `key` of `destination` was taken by (or refused for good).
    pub async fn pushed(&self, destination: &str, key: &str) -> Result<std::collections::HashSet<String>, StoreError> {
        self.client
            .smembers(format!("{}:{key}", self.key("pushed", destination)))
            .await
            .map_err(err("pushed"))
    }

    /// Notes that subscription `id` took delivery `key`.
    pub async fn mark_pushed(&self, destination: &str, key: &str, id: &str) -> Result<(), StoreError> {
        let set = format!("{}:{key}", self.key("pushed", destination));
        self.client.sadd::<(), _, _>(&set, id).await.map_err(err("pushed"))?;
        self.client
            .expire::<(), _>(&set, QUEUED_TTL_SECS, None)
            .await
            .map_err(err("pushed"))
    }

    /// Forgets the subscriptions of a finished delivery.
    pub async fn forget_pushed(&self, destination: &str, key: &str) -> Result<(), StoreError> {
        self.client
            .del::<(), _>(format!("{}:{key}", self.key("pushed", destination)))
            .await
            .map_err(err("pushed"))
    }
}
