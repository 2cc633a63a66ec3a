//! Per-user notifications with unread state (seed 004), on several devices.
//!
//! - Stored per user under `<prefix>user:{<user>}:` (CONTRACT §2): `notifications` (hash id →
//!   JSON), `order` and `unread` (sorted sets by a per-user sequence), `seq`, and `idem:<key>`
//!   for retried creates. Capped per user (the oldest go first), expiring `retention_days`
//!   after the user's last notification. On the memory bus, in this process.
//! - Delivered live on the private channel (`notifications.channel`, default
//!   `notifications`): one bus channel whose events carry `payload.data.user_id`; a stream
//!   joins it by itself and the hub hands it only its own user's events (see [`Private`]), so
//!   it is resumable like every channel (one cursor), and costs one Redis stream however many
//!   users there are.
//! - Events: `NOTIFICATION` (`payload.id` the notification id, `data: {user_id, notification,
//!   unread}`), `NOTIFICATION_READ` (`payload.id` the id, or `*` for read-all; `data: {user_id,
//!   ids | all, unread}`), and on a stream that does not resume the channel, first of all a
//!   `NOTIFICATION_UNREAD` message: `{user_id, unread, notifications}` (the newest unread, up to
//!   `snapshot_limit`).
//! - A notification is stored before it is published, and a stream registers with the hub
//!   before it reads the unread ones: whatever is published after the registration arrives
//!   live, whatever was stored before the read is in the snapshot, and the stream drops the
//!   live copies of what its snapshot had. Each arrives once.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use event_bus::LuaScript;
use event_bus::{Action, AnyBus, Bus, Channel, EventType, NewEvent, Payload, Timestamp};
use fred::{clients::Client, types::Value};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{auth::Principal, error::ApiError, AppState};

/// A new notification for a user.
pub const NOTIFICATION: &str = "NOTIFICATION";
/// Notifications were marked read on some device.
pub const NOTIFICATION_READ: &str = "NOTIFICATION_READ";
/// The first message of a stream that does not resume the private channel.
pub const NOTIFICATION_UNREAD: &str = "NOTIFICATION_UNREAD";

const CREATE_LUA: &str = include_str!("lua/notify_create.lua");
const LIST_LUA: &str = include_str!("lua/notify_list.lua");
const READ_LUA: &str = include_str!("lua/notify_read.lua");
/// A retried create with the same idempotency key returns the first one for this long.
const IDEMPOTENCY_SECS: u64 = 24 * 3600;
/// Longest title and message, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest message, in characters.
pub const MAX_MESSAGE: usize = 4000;

/// `notifications.*` settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Per-user notifications on (`RAKUDA__NOTIFICATIONS__ENABLED`).
    pub enabled: bool,
    /// The private channel: a bus channel that only ever reaches each event's own user.
    pub channel: Channel,
    /// Notifications kept per user; past it the oldest go.
    pub max_per_user: usize,
    /// A user's notifications expire this many days after the last one was created.
    pub retention_days: u64,
    /// Unread notifications sent first on a stream that does not resume (the newest).
    pub snapshot_limit: usize,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            enabled: true,
            channel: Channel::new("notifications").expect("valid"),
            max_per_user: 1000,
            retention_days: 30,
            snapshot_limit: 100,
        }
    }
}

impl NotificationsConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.max_per_user) {
            return Err(format!(
                "notifications.max_per_user: {} is outside 1..=100000",
                self.max_per_user
            ));
        }
        if !(1..=3650).contains(&self.retention_days) {
            return Err(format!(
                "notifications.retention_days: {} is outside 1..=3650",
                self.retention_days
            ));
        }
        if !(1..=1000).contains(&self.snapshot_limit) {
            return Err(format!(
                "notifications.snapshot_limit: {} is outside 1..=1000",
                self.snapshot_limit
            ));
        }
        Ok(())
    }

    /// The bus channel spec of the private channel.
    pub fn channel_spec(&self) -> event_bus::ChannelSpec {
        event_bus::ChannelSpec {
            name: self.channel.clone(),
            types: vec![
                EventType::new(NOTIFICATION).expect("valid"),
                EventType::new(NOTIFICATION_READ).expect("valid"),
            ],
        }
    }
}

/// A stream's view of the private channel: events of `channel` reach it only when their
/// `payload.data.user_id` is `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Private {
    /// The private channel.
    pub channel: Channel,
    /// The stream's user (the token's `sub`).
    pub user: String,
}

/// The user an event of the private channel is for.
pub fn owner(env: &event_bus::Envelope) -> Option<&str> {
    env.payload.data.as_ref()?.get("user_id")?.as_str()
}

/// Whether `user` can have notifications: 1 to 128 characters of `A-Z a-z 0-9 _ . : @ | + -`
/// (no `{` `}`, which would break the keys' hash tag).
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 128 {
        return Err(format!("user id {user:?}: 1 to 128 characters"));
    }
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:@|+-".contains(&b))
    {
        return Err(format!(
            "user id {:?}: only A-Z a-z 0-9 and _ . : @ | + - are allowed",
            user.chars().take(140).collect::<String>()
        ));
    }
    Ok(())
}

/// How bad a notification is (`type` in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something to know.
    Info,
    /// Something to look at.
    Warning,
    /// Something failed.
    Error,
    /// Something worked.
    Success,
}

/// A notification as stored: what never changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Its id (a UUID).
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// `info` | `warning` | `error` | `success`.
    #[serde(rename = "type")]
    pub level: Level,
    /// Short title.
    pub title: String,
    /// The text.
    pub message: String,
    /// When it was created (RFC 3339, UTC, ms).
    pub created_at: Timestamp,
}

/// A notification with its read state, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// What never changes.
    #[serde(flatten)]
    pub stored: Stored,
    /// Marked read on some device.
    pub read: bool,
}

/// What a create did.
#[derive(Debug)]
pub struct Created {
    /// The notification (the first one, for a retried idempotency key).
    pub notification: Notification,
    /// The user's unread count after it.
    pub unread: u64,
    /// False when the idempotency key had been used: nothing new was stored.
    pub new: bool,
}

/// One page of a user's notifications.
#[derive(Debug)]
pub struct Page {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// The user's unread count.
    pub unread: u64,
    /// How many the user has.
    pub total: u64,
}

/// What marking read did.
#[derive(Debug, PartialEq, Eq)]
pub enum Marked {
    /// The user has no notification with that id.
    NotFound,
    /// `changed` notifications went from unread to read; `unread` are left.
    Done {
        /// How many changed.
        changed: u64,
        /// Unread left.
        unread: u64,
    },
}

/// The store failed (Redis unreachable, or an unexpected reply).
#[derive(Debug, thiserror::Error)]
#[error("notification store: {0}")]
pub struct StoreError(String);

/// Where notifications are kept.
#[derive(Clone, Debug)]
pub enum Store {
    /// In this process (the memory bus).
    Memory(Arc<Mutex<HashMap<String, UserBox>>>),
    /// In Redis, next to the streams.
    Redis(Box<RedisStore>),
}

/// One user's notifications in memory.
#[derive(Debug, Default)]
pub struct UserBox {
    seq: u64,
    items: BTreeMap<u64, Stored>,
    by_id: HashMap<String, u64>,
    unread: BTreeSet<u64>,
    idem: HashMap<String, (String, Instant)>,
}

/// The Redis store: three scripts over the user's keys.
#[derive(Clone, Debug)]
pub struct RedisStore {
    client: Client,
    prefix: String,
    create: LuaScript,
    list: LuaScript,
    read: LuaScript,
}

impl Store {
    /// The store that goes with `bus`: Redis for a Redis bus, this process otherwise.
    pub fn for_bus(bus: &AnyBus) -> Store {
        match bus {
            AnyBus::Memory(_) => Store::Memory(Default::default()),
            AnyBus::Redis(b) => Store::Redis(Box::new(RedisStore {
                client: b.client().clone(),
                prefix: bus.config().prefix.clone(),
                create: LuaScript::new(CREATE_LUA),
                list: LuaScript::new(LIST_LUA),
                read: LuaScript::new(READ_LUA),
            })),
        }
    }

    /// Stores `n` for its user, keeping at most `cap`; a repeated `idem` key returns the first.
    pub async fn create(
        &self,
        n: Stored,
        idem: Option<&str>,
        cap: usize,
        ttl: Duration,
    ) -> Result<Created, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut users = m.lock().unwrap();
                let b = users.entry(n.user_id.clone()).or_default();
                let now = Instant::now();
                if b.idem.len() > 10_000 {
                    b.idem
                        .retain(|_, (_, at)| now.duration_since(*at).as_secs() < IDEMPOTENCY_SECS);
                }
                if let Some(key) = idem {
                    if let Some((id, at)) = b.idem.get(key) {
                        if now.duration_since(*at).as_secs() < IDEMPOTENCY_SECS {
                            if let Some(seq) = b.by_id.get(id) {
                                let stored = b.items[seq].clone();
                                let read = !b.unread.contains(seq);
                                return Ok(Created {
                                    notification: Notification { stored, read },
                                    unread: b.unread.len() as u64,
                                    new: false,
                                });
                            }
                        }
                    }
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
            Store::Redis(r) => {
                let user = n.user_id.clone();
                let mut keys = r.keys(&user);
                keys.push(r.key(&user, &format!("idem:{}", idem.unwrap_or(""))));
                let json = serde_json::to_string(&n).map_err(|e| StoreError(e.to_string()))?;
                let args: Vec<Value> = vec![
                    n.id.clone().into(),
                    json.into(),
                    (cap as i64).into(),
                    (ttl.as_secs() as i64).into(),
                    if idem.is_some() { "1" } else { "0" }.into(),
                    (IDEMPOTENCY_SECS as i64).into(),
                ];
                let reply: Vec<Value> = r.create.run(&r.client, keys, args).await.map_err(redis_error)?;
                let bad = || StoreError(format!("create: unexpected reply {reply:?}"));
                let new = reply.first().and_then(Value::as_i64).ok_or_else(bad)? == 1;
                let stored: Stored = reply
                    .get(1)
                    .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(&s).ok()))
                    .ok_or_else(bad)?;
                let unread = reply.get(2).and_then(Value::as_i64).ok_or_else(bad)? as u64;
                let read = reply.get(3).and_then(Value::as_i64).ok_or_else(bad)? == 1;
                Ok(Created {
                    notification: Notification { stored, read },
                    unread,
                    new,
                })
            }
        }
    }

    /// Newest first: at most `limit`, older than `before` if given (`None` if `before` is not
    /// one of the user's), only unread ones if `unread_only`.
    pub async fn list(
        &self,
        user: &str,
        unread_only: bool,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Option<Page>, StoreError> {
        match self {
            Store::Memory(m) => {
                let users = m.lock().unwrap();
                let Some(b) = users.get(user) else {
                    return Ok(if before.is_some() {
                        None
                    } else {
                        Some(Page {
                            notifications: Vec::new(),
                            unread: 0,
                            total: 0,
                        })
                    });
                };
                let upper = match before {
                    None => u64::MAX,
                    Some(id) => match b.by_id.get(id) {
                        Some(s) => *s,
                        None => return Ok(None),
                    },
                };
                let take = |seq: &u64| Notification {
                    stored: b.items[seq].clone(),
                    read: !b.unread.contains(seq),
                };
                let notifications = if unread_only {
                    b.unread.range(..upper).rev().take(limit).map(take).collect()
                } else {
                    b.items.range(..upper).rev().take(limit).map(|(s, _)| take(s)).collect()
                };
                Ok(Some(Page {
                    notifications,
                    unread: b.unread.len() as u64,
                    total: b.items.len() as u64,
                }))
            }
            Store::Redis(r) => {
                let keys = r.keys(user)[..3].to_vec();
                let args: Vec<Value> = vec![
                    if unread_only { "1" } else { "0" }.into(),
                    (limit as i64).into(),
                    before.unwrap_or("").to_owned().into(),
                ];
                let reply: Vec<Value> = r.list.run(&r.client, keys, args).await.map_err(redis_error)?;
                let bad = || StoreError(format!("list: unexpected reply {reply:?}"));
                let unread = reply.first().and_then(Value::as_i64).ok_or_else(bad)?;
                if unread < 0 {
                    return Ok(None);
                }
                let total = reply.get(1).and_then(Value::as_i64).ok_or_else(bad)? as u64;
                let mut notifications = Vec::new();
                for pair in reply[2..].chunks(2) {
                    let stored: Stored = pair[0]
                        .as_str()
                        .and_then(|s| serde_json::from_str(&s).ok())
                        .ok_or_else(bad)?;
                    let read = pair.get(1).and_then(|v| v.as_str()).is_some_and(|s| s == "1");
                    notifications.push(Notification { stored, read });
                }
                Ok(Some(Page {
                    notifications,
                    unread: unread as u64,
                    total,
                }))
            }
        }
    }

    /// Marks `id` read (or all, for `None`).
    pub async fn mark_read(&self, user: &str, id: Option<&str>) -> Result<Marked, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut users = m.lock().unwrap();
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
            Store::Redis(r) => {
                let k = r.keys(user);
                let keys = vec![k[0].clone(), k[2].clone()];
                let args: Vec<Value> = vec![id.unwrap_or("").to_owned().into()];
                let reply: Vec<Value> = r.read.run(&r.client, keys, args).await.map_err(redis_error)?;
                let bad = || StoreError(format!("read: unexpected reply {reply:?}"));
                let changed = reply.first().and_then(Value::as_i64).ok_or_else(bad)?;
                if changed < 0 {
                    return Ok(Marked::NotFound);
                }
                let unread = reply.get(1).and_then(Value::as_i64).ok_or_else(bad)? as u64;
                Ok(Marked::Done {
                    changed: changed as u64,
                    unread,
                })
            }
        }
    }
}

fn redis_error(e: fred::error::Error) -> StoreError {
    StoreError(e.to_string())
}

impl RedisStore {
    fn key(&self, user: &str, what: &str) -> String {
        format!("{}user:{{{user}}}:{what}", self.prefix)
    }

    /// items, order, unread, seq.
    fn keys(&self, user: &str) -> Vec<String> {
        ["notifications", "order", "unread", "seq"]
            .iter()
            .map(|w| self.key(user, w))
            .collect()
    }
}

/// The gateway's notifications: settings and store.
#[derive(Debug)]
pub struct Notifications {
    /// Settings.
    pub config: NotificationsConfig,
    /// Where they are kept.
    pub store: Store,
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "notification store");
    ApiError::unavailable(
        "store_unavailable",
        "the notification store is unavailable; try again",
        2,
    )
}

fn enabled(state: &AppState) -> Result<&Notifications, ApiError> {
    state.notifications().ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        code: "notifications_disabled",
        message: "per-user notifications are switched off on this server (notifications.enabled=false)".into(),
        retry_after: None,
    })
}

/// The caller as a notification owner.
fn owner_of(principal: &Option<Extension<Principal>>) -> Result<String, ApiError> {
    let user = principal
        .as_ref()
        .map(|p| p.0.sub.clone())
        .unwrap_or_else(|| Principal::development().sub);
    check_user(&user)
        .map_err(|e| ApiError::bad_request("bad_user", format!("the token's sub cannot have notifications: {e}")))?;
    Ok(user)
}

/// Body of `POST /api/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    user_id: String,
    #[serde(rename = "type", default = "default_level")]
    level: Level,
    title: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

fn default_level() -> Level {
    Level::Info
}

/// `POST /api/notifications` (publisher): stores a notification and delivers it to every
/// device of its user. 201 with the notification; 200 with the first one for a repeated
/// `idempotency_key`.
pub async fn create(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let n = enabled(&state)?;
    let body = crate::api::read_body(&state, body).await?;
    let req: CreateRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_notification",
            format!("{e} (expected {{\"user_id\", \"type\": info|warning|error|success, \"title\", \"message\", \"idempotency_key\"?}})"),
        )
    })?;
    check_user(&req.user_id).map_err(|e| ApiError::bad_request("bad_user", e))?;
    let title = req.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return Err(ApiError::bad_request(
            "bad_title",
            format!("title: 1 to {MAX_TITLE} characters"),
        ));
    }
    if req.message.chars().count() > MAX_MESSAGE {
        return Err(ApiError::bad_request(
            "bad_message",
            format!("message: at most {MAX_MESSAGE} characters"),
        ));
    }
    if let Some(k) = &req.idempotency_key {
        if k.is_empty() || k.len() > 200 || k.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "idempotency_key: 1 to 200 characters, no control characters",
            ));
        }
    }
    let caller = principal.as_ref().map(|p| p.0.sub.clone()).unwrap_or_default();
    if let Err(wait) = state.publish_limiter().take(&caller, 1.0) {
        return Err(crate::api::rate_limited(&state, 1, wait));
    }
    let stored = Stored {
        id: new_id(),
        user_id: req.user_id,
        level: req.level,
        title: title.to_owned(),
        message: req.message,
        created_at: Timestamp::now(),
    };
    let ttl = Duration::from_secs(n.config.retention_days * 86_400);
    let created = n
        .store
        .create(stored, req.idempotency_key.as_deref(), n.config.max_per_user, ttl)
        .await
        .map_err(store_error)?;
    // Stored first, then published: a failed publish is a 503 the caller retries with its
    // idempotency key, and the bus's key (the notification id) keeps the event to one.
    let c = &created.notification;
    let payload = Payload::new(c.stored.id.clone(), Action::Created).with_data(json!({
        "user_id": c.stored.user_id,
        "notification": c,
        "unread": created.unread,
    }));
    if state.config().realtime_enabled && !c.read {
        let event = NewEvent::new(EventType::new(NOTIFICATION).expect("valid"), payload)
            .with_idempotency_key(format!("notification:{}", c.stored.id));
        state
            .bus()
            .publish(&n.config.channel, event)
            .await
            .map_err(ApiError::from_bus)?;
    }
    state.metrics().notifications_created.inc();
    let status = if created.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // The notification itself, plus the user's unread count after it.
    let mut body = serde_json::to_value(c).unwrap_or_default();
    body["unread"] = json!(created.unread);
    Ok((status, Json(body)).into_response())
}

/// Query of `GET /api/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `true`: only unread ones.
    unread: Option<String>,
    /// At most this many (1 to 200, default 50).
    limit: Option<String>,
    /// Older than this notification id (the previous page's `next_before`).
    before: Option<String>,
    /// The token, for clients that cannot set headers (redacted from logs).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// `GET /api/notifications?unread=true&limit=&before=`: the caller's own, newest first, with
/// the unread count.
pub async fn list(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let n = enabled(&state)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let user = owner_of(&principal)?;
    let unread_only = ApiError::flag("bad_unread", "unread", q.unread.as_deref(), false)?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(v) => match v.parse::<usize>() {
            Ok(l) if (1..=200).contains(&l) => l,
            _ => {
                return Err(ApiError::bad_request(
                    "bad_limit",
                    format!("limit={v:?}: expected 1 to 200"),
                ))
            }
        },
    };
    let page = n
        .store
        .list(&user, unread_only, limit, q.before.as_deref())
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_before",
                "before: not one of your notifications (it may have been dropped past the per-user cap)",
            )
        })?;
    let next_before = (page.notifications.len() == limit)
        .then(|| page.notifications.last().map(|n| n.stored.id.clone()))
        .flatten();
    Ok(Json(json!({
        "user_id": user,
        "notifications": page.notifications,
        "unread": page.unread,
        "total": page.total,
        "next_before": next_before,
    }))
    .into_response())
}

/// `POST /api/notifications/{id}/read`: marks one of the caller's notifications read; the
/// user's other devices get `NOTIFICATION_READ`. 404 for an id the caller does not have.
pub async fn read_one(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    mark(&state, &principal, Some(id)).await
}

/// `POST /api/notifications/read-all`: marks all of the caller's notifications read.
pub async fn read_all(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    mark(&state, &principal, None).await
}

async fn mark(
    state: &AppState,
    principal: &Option<Extension<Principal>>,
    id: Option<String>,
) -> Result<Response, ApiError> {
    let user = owner_of(principal)?;
    Ok(Json(mark_for(state, &user, id).await?).into_response())
}

/// Marks `user`'s notification `id` read (all, for `None`) and tells the user's devices;
/// answers `{id, marked, unread}`. The WebSocket's `mark_read` / `mark_all_read` too.
pub(crate) async fn mark_for(state: &AppState, user: &str, id: Option<String>) -> Result<serde_json::Value, ApiError> {
    let n = enabled(state)?;
    check_user(user).map_err(|e| ApiError::bad_request("bad_user", e))?;
    let marked = n.store.mark_read(user, id.as_deref()).await.map_err(store_error)?;
    let Marked::Done { changed, unread } = marked else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "notification_not_found",
            message: "you have no notification with this id".into(),
            retry_after: None,
        });
    };
    // One event per notification read (the bus key dedupes a retried request whose first
    // publish got through); read-all only when something changed.
    let event = match &id {
        Some(id) => Some(
            NewEvent::new(
                EventType::new(NOTIFICATION_READ).expect("valid"),
                Payload::new(id.clone(), Action::Updated).with_data(json!({
                    "user_id": user, "ids": [id], "unread": unread,
                })),
            )
            .with_idempotency_key(format!("read:{id}")),
        ),
        None if changed > 0 => Some(NewEvent::new(
            EventType::new(NOTIFICATION_READ).expect("valid"),
            Payload::new("*", Action::Updated).with_data(json!({
                "user_id": user, "all": true, "unread": unread,
            })),
        )),
        None => None,
    };
    if let (Some(event), true) = (event, state.config().realtime_enabled) {
        state
            .bus()
            .publish(&n.config.channel, event)
            .await
            .map_err(ApiError::from_bus)?;
    }
    state.metrics().notifications_read.inc_by(changed);
    Ok(json!({"id": id.unwrap_or_else(|| "*".into()), "marked": changed, "unread": unread}))
}

/// The unread snapshot a stream sends first: `(unread count, newest unread)`.
pub async fn snapshot(n: &Notifications, user: &str) -> Result<(u64, Vec<Notification>), StoreError> {
    let page = n
        .store
        .list(user, true, n.config.snapshot_limit, None)
        .await?
        .expect("no `before`: always a page");
    Ok((page.unread, page.notifications))
}

/// A fresh notification id: a random (v4) UUID.
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(user: &str, i: usize) -> Stored {
        Stored {
            id: format!("n{i}"),
            user_id: user.into(),
            level: Level::Info,
            title: format!("t{i}"),
            message: String::new(),
            created_at: Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn memory_store_caps_pages_and_marks() {
        let s = Store::Memory(Default::default());
        let ttl = Duration::from_secs(60);
        for i in 0..7 {
            let c = s.create(stored("a", i), None, 5, ttl).await.unwrap();
            assert!(c.new);
        }
        s.create(stored("b", 99), None, 5, ttl).await.unwrap();
        let all = s.list("a", false, 50, None).await.unwrap().unwrap();
        let ids: Vec<_> = all.notifications.iter().map(|n| n.stored.id.as_str()).collect();
        assert_eq!(ids, ["n6", "n5", "n4", "n3", "n2"], "newest first, oldest two dropped");
        assert_eq!((all.unread, all.total), (5, 5));
        let page = s.list("a", false, 2, Some("n5")).await.unwrap().unwrap();
        assert_eq!(page.notifications.len(), 2);
        assert_eq!(page.notifications[0].stored.id, "n4");
        assert!(s.list("a", false, 2, Some("n0")).await.unwrap().is_none(), "dropped id");
        assert!(
            s.list("a", false, 2, Some("n99")).await.unwrap().is_none(),
            "another user's id"
        );
        assert_eq!(s.mark_read("a", Some("n99")).await.unwrap(), Marked::NotFound);
        assert_eq!(
            s.mark_read("a", Some("n4")).await.unwrap(),
            Marked::Done { changed: 1, unread: 4 }
        );
        assert_eq!(
            s.mark_read("a", Some("n4")).await.unwrap(),
            Marked::Done { changed: 0, unread: 4 }
        );
        let unread = s.list("a", true, 50, None).await.unwrap().unwrap();
        assert!(unread.notifications.iter().all(|n| !n.read && n.stored.id != "n4"));
        assert_eq!(
            s.mark_read("a", None).await.unwrap(),
            Marked::Done { changed: 4, unread: 0 }
        );
        let b = s.list("b", true, 50, None).await.unwrap().unwrap();
        assert_eq!(b.unread, 1, "another user's state is untouched");
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_returns_the_first() {
        let s = Store::Memory(Default::default());
        let ttl = Duration::from_secs(60);
        let first = s.create(stored("a", 1), Some("k"), 10, ttl).await.unwrap();
        let again = s.create(stored("a", 2), Some("k"), 10, ttl).await.unwrap();
        assert!(first.new && !again.new);
        assert_eq!(again.notification.stored.id, "n1");
        assert_eq!(s.list("a", false, 10, None).await.unwrap().unwrap().total, 1);
    }

    #[test]
    fn user_ids_that_would_break_keys_are_refused() {
        for bad in ["", "a{b}", "a b", "a\nb", &"x".repeat(129)] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "auth0|5f1", "a.b@example.com", "user:42"] {
            check_user(good).unwrap();
        }
    }
}
