//! Acknowledgements: who saw an event, and who acted on it (`docs/reference.md`,
//! "Acknowledgements").
//!
//! An acknowledgement is of a *subject* on a channel, by a user, of a kind: `seen` (a toast or
//! feed row was shown on a visible page) or `acknowledged` (a person clicked it, which implies
//! seen). The subject is the event's id; on the notifications channel it is the notification's
//! id (`payload.id`), so reading a notification acknowledges it.
//!
//! Each (subject, user, kind) is kept once, with the time of its first record: recording it
//! again changes nothing (idempotent). A subject keeps at most [`MAX_PER_SUBJECT`] records and
//! lives [`RETENTION`] after its last one. In Redis, a hash per subject,
//! `<prefix>acks:{<channel>}:<subject>`, written by one script; on the memory bus, in this
//! process, at most [`MAX_SUBJECTS`] subjects (the oldest go first).

mod memory;
mod model;

use event_bus::{AnyBus, Channel, LuaScript};
use fred::{clients::Client, interfaces::HashesInterface};
use serde::Deserialize;

use crate::StoreError;

pub use memory::MemoryAcks;
pub use model::{check_subject, Ack, AckKind, MAX_PER_SUBJECT, MAX_SUBJECTS, RETENTION};

const RECORD_LUA: &str = include_str!("record.lua");

/// Where acknowledgements are kept: Redis for a Redis bus, this process otherwise. Cheap to
/// clone: clones share them.
#[derive(Clone, Debug)]
pub enum AckStore {
    /// In this process.
    Memory(MemoryAcks),
    /// In Redis, under the bus prefix.
    Redis {
        /// The connection (the bus's).
        client: Client,
        /// The key prefix.
        prefix: String,
        /// The record script.
        record: LuaScript,
    },
}

impl AckStore {
    /// The store that goes with `bus`. On the memory bus each call makes a new, empty one:
    /// share one among the services of a process.
    pub fn for_bus(bus: &AnyBus) -> AckStore {
        match bus {
            AnyBus::Memory(_) => AckStore::Memory(MemoryAcks::default()),
            AnyBus::Redis(b) => AckStore::Redis {
                client: b.client().clone(),
                prefix: bus.config().prefix.clone(),
                record: LuaScript::new(RECORD_LUA),
            },
        }
    }

    /// Records `ack` of `subject` on `channel` (its logical name); whether it is new (false:
    /// that user had already recorded that kind, and nothing changed), and the record kept (the
    /// first). A subject that holds [`MAX_PER_SUBJECT`] records refuses new users.
    pub async fn record(&self, channel: &Channel, subject: &str, ack: &Ack) -> Result<(bool, Ack), StoreError> {
        check_subject(subject).map_err(StoreError)?;
        match self {
            AckStore::Memory(m) => m.record(channel, subject, ack),
            AckStore::Redis { client, prefix, record } => {
                let field = format!("{}:{}", ack.kind.as_str(), ack.user);
                let implied = match ack.kind {
                    AckKind::Acknowledged => format!("seen:{}", ack.user),
                    AckKind::Seen => String::new(),
                };
                let value = serde_json::json!({"role": ack.role, "at": ack.at}).to_string();
                let args = vec![
                    field.into(),
                    implied.into(),
                    value.into(),
                    (MAX_PER_SUBJECT as i64).into(),
                    (RETENTION.as_millis() as i64).into(),
                ];
                let reply: Vec<fred::types::Value> = record
                    .run(client, vec![key(prefix, channel, subject)], args)
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                let kept = || {
                    let v = reply.get(1).and_then(|v| v.as_string())?;
                    parse(&format!("{}:{}", ack.kind.as_str(), ack.user), &v)
                };
                match (reply.first().and_then(fred::types::Value::as_i64), kept()) {
                    (Some(1), _) => Ok((true, ack.clone())),
                    (Some(0), Some(first)) => Ok((false, first)),
                    (Some(-1), _) => Err(StoreError(format!(
                        "{subject} has {MAX_PER_SUBJECT} acknowledgements already"
                    ))),
                    _ => Err(StoreError(format!("ack script: unexpected reply {reply:?}"))),
                }
            }
        }
    }

    /// Every acknowledgement of `subject` on `channel`, oldest first.
    pub async fn list(&self, channel: &Channel, subject: &str) -> Result<Vec<Ack>, StoreError> {
        check_subject(subject).map_err(StoreError)?;
        let mut acks = match self {
            AckStore::Memory(m) => m.list(channel, subject),
            AckStore::Redis { client, prefix, .. } => {
                let all: std::collections::HashMap<String, String> = client
                    .hgetall(key(prefix, channel, subject))
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                all.into_iter().filter_map(|(f, v)| parse(&f, &v)).collect()
            }
        };
        acks.sort_by(|a, b| (a.at, a.kind, &a.user).cmp(&(b.at, b.kind, &b.user)));
        Ok(acks)
    }
}

/// The hash of a subject: tagged by its channel, so a channel's acknowledgements share a slot.
fn key(prefix: &str, channel: &Channel, subject: &str) -> String {
    format!("{prefix}acks:{{{}}}:{subject}", channel.logical())
}

/// A stored field and value as an [`Ack`] (`None` for one this version does not know).
fn parse(field: &str, value: &str) -> Option<Ack> {
    let (kind, user) = field.split_once(':')?;
    #[derive(Deserialize)]
    struct Stored {
        role: Option<String>,
        at: u64,
    }
    let v: Stored = serde_json::from_str(value).ok()?;
    Some(Ack {
        user: user.to_owned(),
        kind: AckKind::parse(kind)?,
        role: v.role,
        at: v.at,
    })
}
