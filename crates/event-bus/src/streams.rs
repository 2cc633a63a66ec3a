//! A channel's streams: itself, or its partitions (`bus.channels[].partitions`, and a user's
//! partition of the private channel), where an event goes, and whether a cursor was written
//! for another layout of them.

use std::time::Duration;

use crate::{
    config::{BusConfig, PARTITION_EXPIRY},
    cursor::Cursor,
    name::Channel,
};

impl BusConfig {
    /// The streams of a channel: itself, or its partitions `<name>#0` .. `<name>#<N-1>`. A
    /// partition (or an unknown channel) is its own one stream.
    pub fn streams_of(&self, channel: &Channel) -> Vec<Channel> {
        match self.partitions_of(channel) {
            1 => vec![channel.clone()],
            n => (0..n)
                .map(|k| channel.partition(&k.to_string()).expect("checked by validate"))
                .collect(),
        }
    }

    /// How many streams `channel` is spread over: its `partitions`, or 1 for a channel of one
    /// stream, a partition, or an unknown channel.
    fn partitions_of(&self, channel: &Channel) -> u16 {
        match self.spec(channel) {
            Some(spec) if !channel.is_partition() => spec.partitions,
            _ => 1,
        }
    }

    /// The streams of `channels`, in order.
    pub fn streams(&self, channels: &[Channel]) -> Vec<Channel> {
        channels.iter().flat_map(|c| self.streams_of(c)).collect()
    }

    /// Every stream of every configured channel: what a reader of all of them reads.
    pub fn stream_names(&self) -> Vec<Channel> {
        self.streams(&self.channel_names())
    }

    /// The stream an event about entity `key` goes to on `channel`: the channel itself, or its
    /// partition `fnv1a(key) % N` (the same in every process and version).
    pub fn place(&self, channel: &Channel, key: &str) -> Channel {
        match self.partitions_of(channel) {
            1 => channel.clone(),
            n => channel
                .partition(&(crate::name::fnv1a(key.as_bytes()) % u64::from(n)).to_string())
                .expect("checked by validate"),
        }
    }

    /// Whether `cursor` was written for another layout of `channel`'s streams (its partitions
    /// changed since): it holds positions of the channel, but not exactly one per stream of
    /// it now. A reader then starts the channel at its head after a RESYNC, since events of
    /// the old layout after the cursor would otherwise be skipped without a word. A cursor
    /// with no position in the channel starts at the head without one, as always.
    pub fn partitions_changed(&self, channel: &Channel, cursor: &Cursor) -> bool {
        if channel.is_partition() {
            return false;
        }
        let name = channel.as_str();
        let held: Vec<&Channel> = cursor
            .iter()
            .map(|(c, _)| c)
            .filter(|c| {
                c.logical() == name
                    && (!c.is_partition() || c.as_str()[name.len() + 1..].bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        if held.is_empty() {
            return false;
        }
        let now = self.streams_of(channel);
        held.len() != now.len() || now.iter().any(|s| cursor.get(s).is_none())
    }

    /// How long a partition's stream lives after its last event (zero for a channel's: it
    /// stays): the age bound, or [`PARTITION_EXPIRY`] without one. A partition per user comes
    /// and goes with its user, so its stream must not stay for ever.
    pub(crate) fn partition_expiry(&self, channel: &Channel) -> Duration {
        match (channel.is_partition(), self.retention.max_age_secs) {
            (false, _) => Duration::ZERO,
            (true, 0) => PARTITION_EXPIRY,
            (true, s) => Duration::from_secs(s),
        }
    }
}
