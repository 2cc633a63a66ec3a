//! Who is connected to this hub: the admin endpoint's list, the users per channel that presence
//! announces (`crate::presence`), and the `PRESENCE` messages to the connections that asked.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use bytes::Bytes;
use event_bus::Channel;

use super::{event::Item, fan_out::Hub, registry::ConnInfo};

/// Users and their connections, by user.
pub type Roster = BTreeMap<String, u64>;

impl Hub {
    /// What the admin endpoint lists.
    pub fn connection_infos(&self) -> Vec<Arc<ConnInfo>> {
        let mut v = Vec::new();
        for shard in &self.inner.shards {
            let reg = shard.registry.lock().unwrap();
            v.extend(reg.conns.values().map(|c| c.info.clone()));
        }
        v.sort_by_key(|i| i.id);
        v
    }

    /// The users connected here, per channel (by name, partitions as their channel; `skip`
    /// left out: the private channel, whose followers are its users), and per channel the
    /// connections that asked for its presence. One look at each shard's registry: nothing is
    /// counted at a connection's join or leave.
    pub fn rosters(&self, skip: Option<&str>) -> (BTreeMap<String, Roster>, BTreeMap<String, BTreeSet<u64>>) {
        let mut rosters: BTreeMap<String, Roster> = BTreeMap::new();
        let mut asked: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for shard in &self.inner.shards {
            let reg = shard.registry.lock().unwrap();
            for c in reg.conns.values() {
                let Some(user) = &c.info.user else { continue };
                for ch in c.info.channels.iter().filter(|ch| Some(ch.as_str()) != skip) {
                    *rosters.entry(ch.clone()).or_default().entry(user.clone()).or_default() += 1;
                    if c.info.presence {
                        asked.entry(ch.clone()).or_default().insert(c.info.id);
                    }
                }
            }
        }
        (rosters, asked)
    }

    /// Hands `message` (a `PRESENCE` message's JSON) to every connection here that asked for
    /// presence and follows `channel`; how many. One whose queue is full skips it: the next
    /// message carries the whole roster again.
    pub fn announce_presence(&self, channel: &Channel, message: Bytes) -> usize {
        let item = Item::Presence(Arc::new((channel.clone(), message)));
        let mut n = 0;
        for shard in &self.inner.shards {
            let reg = shard.registry.lock().unwrap();
            for c in reg.conns.values() {
                let follows = c.filter.channels.iter().any(|f| f.logical() == channel.as_str());
                if c.info.presence && follows && c.tx.pushing().push(item.clone()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}
