//! `notifications`: per-user notifications with unread state (seed 004), on several devices.
//!
//! - Stored per user under `<prefix>user:{<user>}:` (`docs/reference.md`, "Redis keys"):
//!   `notifications` (hash id → JSON), `order` and `unread` (sorted sets by a per-user
//!   sequence), `seq`, and `idem:<key>` for retried creates. Capped per user (the oldest go
//!   first), expiring `retention_days` after the user's last notification. On the memory bus,
//!   in this process ([`MemoryStore`]); otherwise in Redis next to the streams ([`RedisStore`]).
//! - Delivered live on the private channel (`notifications.channel`, default
//!   `notifications`): one bus channel whose events carry `payload.data.user_id`; a stream
//!   joins it by itself and sees only its own user's events ([`Private`]), so it is resumable
//!   like every channel (one cursor) and costs one Redis stream however many users there are.
//! - Events: `NOTIFICATION` (`payload.id` the notification id, `data: {user_id, notification,
//!   unread}`), `NOTIFICATION_READ` (`payload.id` the id, or `*` for read-all; `data: {user_id,
//!   ids | all, unread}`); a stream that does not resume the channel first gets a
//!   `NOTIFICATION_UNREAD` snapshot ([`Notifications::snapshot`]).
//! - A notification is stored before it is published ([`Notifications::create`]), and a stream
//!   registers with the hub before it reads the snapshot: whatever is published after the
//!   registration arrives live, whatever was stored before the read is in the snapshot, and the
//!   stream drops the live copies of what its snapshot had. Each arrives once.
//!
//! No HTTP here: the gateway's handlers parse requests and call [`Notifications`].
//!
//! # Layout
//! - [`config`]: [`NotificationsConfig`], the event types, the limits.
//! - [`model`]: a notification, a page, what a create or a mark did; whose an event is.
//! - [`store`]: the [`Store`] trait, [`MemoryStore`] and [`RedisStore`] side by side, and
//!   [`AnyStore`] (the one that goes with a bus).
//! - [`service`]: [`Notifications`]: checks, store, then publish.
//! - [`push`]: Web Push subscriptions of a user's browsers, checked; stored by [`PushStore`].
//! - [`acks`]: who saw an event and who acknowledged it ([`acks::AckStore`]).

pub mod acks;
pub mod config;
pub mod model;
pub mod push;
pub mod service;
pub mod store;

pub use config::{
    NotificationsConfig, PushConfig, MAX_MESSAGE, MAX_TITLE, NOTIFICATION, NOTIFICATION_READ, NOTIFICATION_UNREAD,
};
pub use model::{check_user, owner, Created, Level, Marked, Notification, Page, PageQuery, Private, Stored};
pub use service::{Error, MarkedRead, NewNotification, Notifications};
pub use store::{AnyStore, MemoryStore, PushStore, RedisStore, Store, StoreError};
