//! The service: checks a request, stores, then publishes, so that every device of the user
//! hears of it. Generic over the bus and the store; no HTTP (the gateway maps [`Error`] to
//! its answers).

use std::time::Duration;

use event_bus::{Action, Bus, BusError, Channel, EventType, NewEvent, Payload, Timestamp};
use serde_json::json;

use crate::{
    config::{NotificationsConfig, MAX_IDEMPOTENCY_KEY, MAX_MESSAGE, MAX_TITLE, NOTIFICATION, NOTIFICATION_READ},
    model::{check_user, Created, Level, Marked, Notification, Page, PageQuery, Private, Stored},
    store::{AnyStore, Store, StoreError},
};

/// Why a request cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong: `code` is stable, `message` says what to change.
    #[error("{message}")]
    Invalid {
        /// Stable code, e.g. `bad_title`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The user has no notification with that id.
    #[error("you have no notification with this id")]
    NotFound,
    /// The store failed: try again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored, but the event could not be published: try again (with the idempotency key).
    #[error(transparent)]
    Bus(#[from] BusError),
}

fn invalid(code: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        code,
        message: message.into(),
    }
}

/// A notification to create.
#[derive(Clone, Debug)]
pub struct NewNotification {
    /// Whose it is.
    pub user_id: String,
    /// How bad.
    pub level: Level,
    /// Short title (trimmed; 1 to [`MAX_TITLE`] characters).
    pub title: String,
    /// The text (at most [`MAX_MESSAGE`] characters).
    pub message: String,
    /// A retried create with the same key returns the first one.
    pub idempotency_key: Option<String>,
}

impl NewNotification {
    /// Checks the request; the error names the field.
    pub fn check(&self) -> Result<(), Error> {
        check_user(&self.user_id).map_err(|e| invalid("bad_user", e))?;
        let title = self.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE {
            return Err(invalid("bad_title", format!("title: 1 to {MAX_TITLE} characters")));
        }
        if self.message.chars().count() > MAX_MESSAGE {
            return Err(invalid(
                "bad_message",
                format!("message: at most {MAX_MESSAGE} characters"),
            ));
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY || k.chars().any(char::is_control) {
                return Err(invalid(
                    "invalid_idempotency_key",
                    format!("idempotency_key: 1 to {MAX_IDEMPOTENCY_KEY} characters, no control characters"),
                ));
            }
        }
        Ok(())
    }
}

/// What marking read did: `id` (`None` for all), how many changed, how many are left unread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkedRead {
    /// The notification, or `None` for all of the user's.
    pub id: Option<String>,
    /// How many went from unread to read.
    pub changed: u64,
    /// Unread left.
    pub unread: u64,
}

/// Per-user notifications over a bus and a store.
#[derive(Debug)]
pub struct Notifications<B, S = AnyStore> {
    config: NotificationsConfig,
    store: S,
    bus: B,
    publishing: bool,
}

impl<B: Bus, S: Store> Notifications<B, S> {
    /// Over `bus` (which must carry `config.channel`) and `store`; publishing on.
    pub fn new(config: NotificationsConfig, store: S, bus: B) -> Self {
        Notifications {
            config,
            store,
            bus,
            publishing: true,
        }
    }

    /// With `false`, changes are stored but no event is published (`REALTIME_ENABLED=false`).
    pub fn publishing(mut self, on: bool) -> Self {
        self.publishing = on;
        self
    }

    /// The settings.
    pub fn config(&self) -> &NotificationsConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// `user`'s view of the private channel: the user's partition of it, where every event
    /// for the user is published (`user` must pass [`check_user`]).
    pub fn private(&self, user: &str) -> Private {
        Private {
            channel: self.partition(user),
            user: user.to_owned(),
        }
    }

    /// The partition of the private channel where `user`'s events live: its own stream and
    /// shard channel, in its own hash slot, so only the gateways that serve the user hear of
    /// them.
    pub fn partition(&self, user: &str) -> Channel {
        // The channel's length is checked with the configuration.
        self.config
            .channel
            .user_partition(user)
            .expect("notifications.channel leaves room for a partition key")
    }

    /// Stores a notification, then publishes `NOTIFICATION` to its user's devices (the bus key,
    /// the notification id, keeps a retried publish to one event). A repeated idempotency key
    /// answers the first notification (`new: false`) and publishes nothing new.
    pub async fn create(&self, req: NewNotification) -> Result<Created, Error> {
        req.check()?;
        let stored = Stored {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: req.user_id,
            level: req.level,
            title: req.title.trim().to_owned(),
            message: req.message,
            created_at: Timestamp::now(),
        };
        let ttl = Duration::from_secs(self.config.retention_days * 86_400);
        let created = self
            .store
            .create(stored, req.idempotency_key.as_deref(), self.config.max_per_user, ttl)
            .await?;
        let c = &created.notification;
        if self.publishing && !c.read {
            let payload = Payload::new(c.stored.id.clone(), Action::Created).with_data(json!({
                "user_id": c.stored.user_id,
                "notification": c,
                "unread": created.unread,
            }));
            let event = NewEvent::new(EventType::new(NOTIFICATION).expect("valid"), payload)
                .with_idempotency_key(format!("notification:{}", c.stored.id));
            self.bus.publish(&self.partition(&c.stored.user_id), event).await?;
        }
        Ok(created)
    }

    /// One page of `user`'s notifications, newest first.
    pub async fn list(&self, user: &str, q: PageQuery<'_>) -> Result<Page, Error> {
        check_user(user).map_err(|e| invalid("bad_user", format!("the token's sub cannot have notifications: {e}")))?;
        self.store.list(user, q).await?.ok_or_else(|| {
            invalid(
                "bad_before",
                "before: not one of your notifications (it may have been dropped past the per-user cap)",
            )
        })
    }

    /// Marks `user`'s notification `id` read (all, for `None`), then publishes
    /// `NOTIFICATION_READ` so the user's other devices update: one event per notification
    /// read (its bus key dedupes a retried request whose first publish got through), and for
    /// read-all only when something changed.
    pub async fn mark(&self, user: &str, id: Option<String>) -> Result<MarkedRead, Error> {
        check_user(user).map_err(|e| invalid("bad_user", e))?;
        // An empty id is no notification (the stores would read it as "all").
        if id.as_deref() == Some("") {
            return Err(Error::NotFound);
        }
        let Marked::Done { changed, unread } = self.store.mark_read(user, id.as_deref()).await? else {
            return Err(Error::NotFound);
        };
        let read = EventType::new(NOTIFICATION_READ).expect("valid");
        let event = match &id {
            Some(id) => Some(
                NewEvent::new(
                    read,
                    Payload::new(id.clone(), Action::Updated).with_data(json!({
                        "user_id": user, "ids": [id], "unread": unread,
                    })),
                )
                // Per user: the key must not silence another user's event.
                .with_idempotency_key(format!("read:{user}:{id}")),
            ),
            None if changed > 0 => Some(NewEvent::new(
                read,
                Payload::new("*", Action::Updated).with_data(json!({
                    "user_id": user, "all": true, "unread": unread,
                })),
            )),
            None => None,
        };
        if let (Some(event), true) = (event, self.publishing) {
            self.bus.publish(&self.partition(user), event).await?;
        }
        Ok(MarkedRead { id, changed, unread })
    }

    /// The unread snapshot a stream sends first: `(unread count, newest unread)`, at most
    /// `snapshot_limit`.
    pub async fn snapshot(&self, user: &str) -> Result<(u64, Vec<Notification>), StoreError> {
        let page = self
            .store
            .list(
                user,
                PageQuery {
                    unread_only: true,
                    limit: self.config.snapshot_limit,
                    before: None,
                },
            )
            .await?
            .unwrap_or_else(Page::empty);
        Ok((page.unread, page.notifications))
    }
}
