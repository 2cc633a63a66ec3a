//! The connections a shard of the hub fans out to: each one's filter, queue and admin info; the
//! counts across the shards; and the registration a stream holds (dropping it removes the
//! connection).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Arc, Mutex,
    },
};

use chrono::{DateTime, Utc};
use event_bus::{Channel, Cursor};
use prometheus::IntGauge;
use serde::Serialize;

use super::{
    collapsed::Collapsed,
    filter::Filter,
    queue::{Receiver, Sender},
};
use crate::telemetry::transport::Transport;

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The process has as many streams as it may.
    AtCapacity,
    /// This client (its user, or its IP without tokens) has as many streams as it may.
    ClientAtCapacity,
}

/// What the admin endpoint shows of a connection.
#[derive(Debug, Serialize)]
pub struct ConnInfo {
    /// Connection id (also in the logs).
    pub id: u64,
    /// The authenticated user (`dev` in `AUTH_MODE=none`).
    pub user: Option<String>,
    /// Channels followed.
    pub channels: Vec<String>,
    /// When it opened.
    pub since: DateTime<Utc>,
    /// Events written to it.
    pub events_sent: AtomicU64,
    /// It resumed from a cursor.
    pub resumed: bool,
    /// SSE or WebSocket.
    pub transport: Transport,
    /// It was cut for being too slow.
    #[serde(skip)]
    pub cut: AtomicBool,
    /// It was told to reconnect elsewhere: this instance held more than its share.
    #[serde(skip)]
    pub shed: AtomicBool,
    /// Signalled when it is cut, so a transport stuck writing to it closes at once.
    #[serde(skip)]
    pub cut_signal: tokio::sync::Notify,
    /// Its queue was full: the hub queues nothing for it until its stream has caught up from
    /// the store (and clears this).
    #[serde(skip)]
    pub behind: AtomicBool,
    /// It asked for `PRESENCE` messages (`presence=1`).
    #[serde(skip)]
    pub presence: bool,
}

pub(crate) struct Entry {
    pub(crate) filter: Arc<Filter>,
    /// The one channel of a filter that selects nothing else (most streams): every event of
    /// it is wanted, asked without reading the filter (a fan-out asks every connection).
    pub(crate) only: Option<Channel>,
    pub(crate) tx: Sender,
    pub(crate) info: Arc<ConnInfo>,
    pub(crate) client: String,
    pub(crate) collapsed: Arc<Collapsed>,
}

/// The connections of one shard.
pub(crate) struct Registry {
    pub(crate) conns: HashMap<u64, Entry>,
    /// The shard's position: the last event it fanned out, per channel.
    pub(crate) head: Cursor,
}

/// The connections of every shard, counted for the limits.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) total: usize,
    pub(crate) per_client: HashMap<String, usize>,
}

impl Counts {
    /// Counts a connection of `client`, if the limits allow it.
    pub(crate) fn take(&mut self, client: &str, max: usize, max_per_client: usize) -> Result<(), Refused> {
        if self.total >= max {
            return Err(Refused::AtCapacity);
        }
        let mine = match self.per_client.get_mut(client) {
            Some(n) => n,
            None => self.per_client.entry(client.to_owned()).or_default(),
        };
        if *mine >= max_per_client {
            return Err(Refused::ClientAtCapacity);
        }
        *mine += 1;
        self.total += 1;
        Ok(())
    }

    /// A connection of `client` is gone.
    pub(crate) fn release(&mut self, client: &str) {
        self.total -= 1;
        if let Some(n) = self.per_client.get_mut(client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(client);
            }
        }
    }
}

/// A registered connection: its queue, where the hub stood when it joined, and its info.
/// Dropping it removes the connection from the hub.
#[derive(Debug)]
pub struct Registration {
    /// Its channels stay followed while it lives (released once its drop removed it).
    pub(crate) _following: super::follows::Following,
    /// Where it is registered.
    pub(crate) registry: Arc<Mutex<Registry>>,
    /// Where it is counted.
    pub(crate) counts: Arc<Mutex<Counts>>,
    /// `realtime_connections_active` of its transport.
    pub(crate) active: IntGauge,
    /// Admin info.
    pub info: Arc<ConnInfo>,
    /// Items fanned out to this connection.
    pub rx: Receiver,
    /// The hub's position in the connection's channels when it joined: every later event
    /// arrives through `rx` (or, for a lagging client of a latest-wins channel, `collapsed`).
    pub head: Cursor,
    /// State events put aside, latest per entity, when `rx` was full.
    pub collapsed: Arc<Collapsed>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Gone already if the fan-out cut it (and released its count).
        let removed = self.registry.lock().unwrap().conns.remove(&self.info.id);
        if let Some(e) = removed {
            self.counts.lock().unwrap().release(&e.client);
        }
        self.active.dec();
    }
}
