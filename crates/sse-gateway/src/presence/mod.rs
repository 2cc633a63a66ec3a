//! Presence: who is connected now, per channel and per user, across every gateway
//! (`docs/reference.md`, "Presence").
//!
//! Nothing happens at a connection's join or leave. Every `presence_interval_ms` each gateway
//! counts its connections' users per channel (one look at each shard's registry,
//! [`Hub::rosters`]) and writes each channel's roster in one script call
//! (`presence:{<channel>}:gw:<instance>`, living three intervals, and the channel's set of
//! gateways): a burst of joins costs Redis nothing more than a quiet second. A gateway that dies
//! stops refreshing, and its rosters expire within three intervals. Reading a channel's roster
//! merges every live gateway's. On the memory bus, the process's own roster is the whole.
//!
//! A stream with `presence=1` gets `PRESENCE` messages: the channel's users with their
//! connection counts, and who joined and who left since the last one, whenever that changes
//! (checked every interval, for the channels such streams follow).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use event_bus::{AnyBus, Channel, LuaScript, Timestamp};
use fred::{
    clients::Client,
    interfaces::{KeysInterface, SetsInterface},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::hub::{roster::Roster, Hub};

const ANNOUNCE: &str = include_str!("announce.lua");

/// The rosters of every gateway, where the bus keeps state.
#[derive(Clone, Debug)]
pub enum Presence {
    /// One process: its own rosters are all there is.
    Memory(std::sync::Arc<std::sync::Mutex<BTreeMap<String, Roster>>>),
    /// In Redis.
    Redis {
        /// The connection (the bus's).
        client: Client,
        /// The key prefix.
        prefix: String,
        /// The announce script.
        announce: LuaScript,
    },
}

impl Presence {
    /// Where `bus` keeps it.
    pub fn for_bus(bus: &AnyBus) -> Presence {
        match bus {
            AnyBus::Memory(_) => Presence::Memory(Default::default()),
            AnyBus::Redis(b) => Presence::Redis {
                client: b.client().clone(),
                prefix: bus.config().prefix.clone(),
                announce: LuaScript::new(ANNOUNCE),
            },
        }
    }

    fn keys(prefix: &str, channel: &str, instance: &str) -> (String, String) {
        (
            format!("{prefix}presence:{{{channel}}}:gw:{instance}"),
            format!("{prefix}presence:{{{channel}}}:gateways"),
        )
    }

    /// Writes `instance`'s rosters (an empty one: no one there any more), living `ttl`.
    pub async fn announce(
        &self,
        instance: &str,
        rosters: &BTreeMap<String, Roster>,
        ttl: Duration,
    ) -> Result<(), fred::error::Error> {
        match self {
            Presence::Memory(m) => {
                let mut m = m.lock().unwrap();
                m.clear();
                m.extend(
                    rosters
                        .iter()
                        .filter(|(_, r)| !r.is_empty())
                        .map(|(c, r)| (c.clone(), r.clone())),
                );
                Ok(())
            }
            Presence::Redis {
                client,
                prefix,
                announce,
            } => {
                for (channel, roster) in rosters {
                    let (mine, gateways) = Self::keys(prefix, channel, instance);
                    let text = if roster.is_empty() {
                        String::new()
                    } else {
                        serde_json::to_string(roster).unwrap_or_default()
                    };
                    let args = vec![instance.into(), text.into(), (ttl.as_millis() as i64).into()];
                    let _: i64 = announce.run(client, vec![mine, gateways], args).await?;
                }
                Ok(())
            }
        }
    }

    /// `channel`'s users across every live gateway, with their connections.
    pub async fn read(&self, channel: &str) -> Result<Roster, fred::error::Error> {
        match self {
            Presence::Memory(m) => Ok(m.lock().unwrap().get(channel).cloned().unwrap_or_default()),
            Presence::Redis { client, prefix, .. } => {
                let (_, gateways) = Self::keys(prefix, channel, "");
                let members: Vec<String> = client.smembers(&gateways).await?;
                if members.is_empty() {
                    return Ok(Roster::new());
                }
                let keys: Vec<String> = members.iter().map(|g| Self::keys(prefix, channel, g).0).collect();
                let values: Vec<Option<String>> = client.mget(keys).await?;
                let mut all = Roster::new();
                let mut gone = Vec::new();
                for (gateway, v) in members.iter().zip(values) {
                    let Some(v) = v else {
                        gone.push(gateway.clone());
                        continue;
                    };
                    let roster: Roster = serde_json::from_str(&v).unwrap_or_default();
                    for (user, n) in roster {
                        *all.entry(user).or_default() += n;
                    }
                }
                if !gone.is_empty() {
                    // Expired with their gateway.
                    let _: i64 = client.srem(&gateways, gone).await?;
                }
                Ok(all)
            }
        }
    }
}

/// A roster as JSON: `[{user, connections}]`, by user.
pub fn users(roster: &Roster) -> serde_json::Value {
    roster
        .iter()
        .map(|(u, n)| json!({"user": u, "connections": n}))
        .collect()
}

/// The `PRESENCE` message of `channel` whose roster went from `before` to `now`.
pub fn message(channel: &str, before: &Roster, now: &Roster) -> String {
    let joins: Vec<&String> = now.keys().filter(|u| !before.contains_key(*u)).collect();
    let leaves: Vec<&String> = before.keys().filter(|u| !now.contains_key(*u)).collect();
    json!({
        "type": "PRESENCE",
        "channel": channel,
        "users": users(now),
        "connections": now.values().sum::<u64>(),
        "joins": joins,
        "leaves": leaves,
        "timestamp": Timestamp::now(),
    })
    .to_string()
}

/// Announces this gateway's rosters every `every` and tells the streams that asked when a
/// channel's roster changed, until `stop`. `skip`: the private channel (no presence there).
pub async fn run(
    presence: Presence,
    hub: Hub,
    instance: String,
    skip: Option<String>,
    every: Duration,
    stop: CancellationToken,
) {
    let ttl = every * 3;
    // This process's own name in the rosters: processes sharing an INSTANCE_ID (on one host,
    // the hostname) must not overwrite each other's.
    let instance = format!("{instance}#{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut announced: BTreeMap<String, Roster> = BTreeMap::new();
    // Per channel: the roster its asking streams were last told, and which streams they were.
    let mut told: HashMap<String, (Roster, BTreeSet<u64>)> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let (mut rosters, asked) = hub.rosters(skip.as_deref());
        // A channel no one follows here any more: its roster goes now, not at its expiry.
        for channel in announced.keys() {
            rosters.entry(channel.clone()).or_default();
        }
        let done = presence.announce(&instance, &rosters, ttl).await;
        if let Err(e) = &done {
            if !logged {
                tracing::warn!(error = %e, "presence: announcing failed; trying again");
                logged = true;
            }
            continue;
        }
        logged = false;
        rosters.retain(|_, r| !r.is_empty());
        announced = rosters;
        told.retain(|c, _| asked.contains_key(c));
        for (channel, streams) in asked {
            let Ok(now) = presence.read(&channel).await else {
                continue;
            };
            let (before, known) = told.get(&channel).cloned().unwrap_or_default();
            // Told again when it changed, or when a stream asked that was not told yet.
            if now != before || !streams.is_subset(&known) {
                let Ok(c) = Channel::new(&channel) else { continue };
                hub.announce_presence(&c, message(&channel, &before, &now).into());
                told.insert(channel, (now, streams));
            }
        }
    }
    // Leaving: this gateway's rosters go at once.
    for r in announced.values_mut() {
        r.clear();
    }
    let _ = presence.announce(&instance, &announced, ttl).await;
}
