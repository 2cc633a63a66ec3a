//! Where the daily hashes are read: Redis, next to the streams, or this process when the bus is
//! the in-memory one (`make run`, tests), where the aggregator writes into the same
//! [`MemoryDays`] the gateway reads.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::NaiveDate;
use event_bus::AnyBus;
use fred::{clients::Client, interfaces::HashesInterface};
use serde_json::Value;

use crate::{
    daily::{daily_json, range_json, MAX_RANGE_DAYS},
    keys::day_key,
    time::days,
};

/// Daily hashes (and the aggregator's bookkeeping hashes) held in this process, by key. Cheap
/// to clone: clones share the hashes.
#[derive(Clone, Debug, Default)]
pub struct MemoryDays(Arc<Mutex<HashMap<String, HashMap<String, String>>>>);

impl MemoryDays {
    /// The key a day's hash has in memory.
    pub fn key(day: NaiveDate) -> String {
        day.format("%Y-%m-%d").to_string()
    }

    /// A copy of the hash `key` (empty when there is none).
    pub fn read(&self, key: &str) -> HashMap<String, String> {
        self.0.lock().unwrap().get(key).cloned().unwrap_or_default()
    }

    /// Changes the hash `key` (created empty if need be) under the lock.
    pub fn update<R>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, String>) -> R) -> R {
        let mut all = self.0.lock().unwrap();
        f(all.entry(key.to_owned()).or_default())
    }
}

/// Reading a day failed (Redis unreachable).
#[derive(Debug, thiserror::Error)]
#[error("daily statistics: {0}")]
pub struct ReadError(String);

/// Where the daily hashes are.
#[derive(Clone, Debug)]
pub enum DayStore {
    /// In this process.
    Memory(MemoryDays),
    /// In Redis, under `prefix`.
    Redis {
        /// A client (the bus's own, shared).
        client: Client,
        /// The key prefix.
        prefix: String,
    },
}

impl DayStore {
    /// The store that goes with `bus`: Redis over the bus's connection, or a new in-process one
    /// for the memory bus (which only this process can have written).
    pub fn for_bus(bus: &AnyBus) -> DayStore {
        match bus {
            AnyBus::Memory(_) => DayStore::Memory(MemoryDays::default()),
            AnyBus::Redis(b) => DayStore::Redis {
                client: b.client().clone(),
                prefix: bus.config().prefix.clone(),
            },
        }
    }

    /// The whole hash of `day` (empty when there is none).
    pub async fn read_day(&self, day: NaiveDate) -> Result<HashMap<String, String>, ReadError> {
        match self {
            DayStore::Memory(m) => Ok(m.read(&MemoryDays::key(day))),
            DayStore::Redis { client, prefix } => client
                .hgetall(day_key(prefix, day))
                .await
                .map_err(|e| ReadError(format!("HGETALL: {e}"))),
        }
    }
}

/// One day's statistics as JSON (`proto-schemas/daily-stats.schema.json`).
pub async fn daily(store: &DayStore, day: NaiveDate) -> Result<Value, ReadError> {
    Ok(daily_json(day, &store.read_day(day).await?))
}

/// Why a range cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// `from` after `to`, or too long a span.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Days `from..=to` and their totals (`proto-schemas/stats-range.schema.json`).
pub async fn range(store: &DayStore, from: NaiveDate, to: NaiveDate) -> Result<Value, RangeError> {
    if from > to {
        return Err(RangeError::Invalid(format!("from ({from}) is after to ({to})")));
    }
    let span = (to - from).num_days() + 1;
    if span > MAX_RANGE_DAYS {
        return Err(RangeError::Invalid(format!(
            "{span} days asked; at most {MAX_RANGE_DAYS} at once"
        )));
    }
    let mut out = Vec::new();
    for d in days(from, to) {
        out.push(daily(store, d).await?);
    }
    Ok(range_json(from, to, out))
}
