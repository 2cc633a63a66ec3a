//! What one subscription follows ([`super::live`]): per channel its [`Follow`], whether its
//! stream must be read (`dirty`) and whether its shard channel must be subscribed again
//! (`unheard`); an index from pub/sub name to channel, and the rotation of the tail check.
//!
//! A gateway may follow thousands of channels (a partition per connected user), so finding
//! the channel of a message is a lookup, not a scan, and the tail check reads at most
//! [`TAIL_CHECKS`] streams per tick, in turn.

use std::collections::HashMap;

use super::reader::Follow;
use crate::name::Channel;

/// Streams the tail check reads per tick at most: with more channels followed, each is
/// checked every `len / TAIL_CHECKS` ticks, so the check costs Redis a bounded number of
/// `XREVRANGE`s per subscriber whatever it follows.
pub(super) const TAIL_CHECKS: usize = 256;

#[derive(Default)]
pub(super) struct Followed {
    pub(super) list: Vec<Follow>,
    /// Channels whose stream must be read before their next announcement is trusted.
    pub(super) dirty: Vec<bool>,
    /// Channels whose announcements went missing: their shard channel is subscribed again.
    pub(super) unheard: Vec<bool>,
    /// Shard channel or Phase 27 name to index in `list`, and whether it is the shard channel.
    by_name: HashMap<String, (usize, bool)>,
    /// Where the next tail check starts.
    next_tail: usize,
}

impl Followed {
    pub(super) fn new(list: Vec<Follow>) -> Self {
        let n = list.len();
        let mut f = Followed {
            list,
            dirty: vec![true; n],
            unheard: vec![false; n],
            ..Default::default()
        };
        f.index();
        f
    }

    fn index(&mut self) {
        self.by_name.clear();
        for i in 0..self.list.len() {
            self.name(i);
        }
    }

    /// Indexes the names of the channel at `i`.
    fn name(&mut self, i: usize) {
        let f = &self.list[i];
        self.by_name.insert(f.live.clone(), (i, true));
        self.by_name.insert(f.pubsub.clone(), (i, false));
    }

    pub(super) fn contains(&self, channel: &Channel) -> bool {
        self.list.iter().any(|f| &f.channel == channel)
    }

    /// Adds a channel, its stream to be read.
    pub(super) fn push(&mut self, f: Follow, unheard: bool) {
        self.list.push(f);
        self.dirty.push(true);
        self.unheard.push(unheard);
        self.name(self.list.len() - 1);
    }

    /// Removes a channel, if followed.
    pub(super) fn remove(&mut self, channel: &Channel) -> Option<Follow> {
        let i = self.list.iter().position(|f| &f.channel == channel)?;
        let f = self.list.swap_remove(i);
        self.dirty.swap_remove(i);
        self.unheard.swap_remove(i);
        self.by_name.remove(&f.live);
        self.by_name.remove(&f.pubsub);
        if i < self.list.len() {
            self.name(i);
        }
        Some(f)
    }

    /// The channel a message on `name` is of, and whether `name` is its shard channel.
    pub(super) fn find(&self, name: &str) -> Option<(usize, bool)> {
        self.by_name.get(name).copied()
    }

    /// The indices the next tail check reads: all, or the next [`TAIL_CHECKS`] in turn.
    pub(super) fn tail_batch(&mut self) -> Vec<usize> {
        let n = self.list.len();
        if n <= TAIL_CHECKS {
            return (0..n).collect();
        }
        let start = self.next_tail % n;
        self.next_tail = (start + TAIL_CHECKS) % n;
        (0..TAIL_CHECKS).map(|k| (start + k) % n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EventId;

    fn follow(i: usize) -> Follow {
        Follow {
            channel: Channel::new(format!("c{i}")).unwrap(),
            key: format!("s{i}"),
            live: format!("l{i}"),
            pubsub: format!("p{i}"),
            pos: EventId::ZERO,
            tail: EventId::ZERO,
        }
    }

    #[test]
    fn names_find_their_channel_after_removals() {
        let mut f = Followed::new((0..5).map(follow).collect());
        assert_eq!(f.find("l3"), Some((3, true)));
        assert_eq!(f.find("p3"), Some((3, false)));
        assert!(f.remove(&Channel::new("c1").unwrap()).is_some());
        assert!(f.remove(&Channel::new("c1").unwrap()).is_none());
        assert_eq!(f.find("l1"), None);
        for name in ["l0", "l2", "l3", "l4"] {
            let (i, live) = f.find(name).unwrap();
            assert!(live);
            assert_eq!(f.list[i].live, name);
        }
        f.push(follow(9), true);
        let (i, _) = f.find("p9").unwrap();
        assert_eq!(f.list[i].channel.as_str(), "c9");
        assert!(f.unheard[i] && f.dirty[i]);
    }

    #[test]
    fn the_tail_check_takes_every_channel_in_turn() {
        let n = TAIL_CHECKS * 2 + 10;
        let mut f = Followed::new((0..n).map(follow).collect());
        let mut seen = vec![0; n];
        for _ in 0..3 {
            let batch = f.tail_batch();
            assert_eq!(batch.len(), TAIL_CHECKS);
            for i in batch {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&k| k >= 1), "every channel checked within three ticks");
        let mut small = Followed::new((0..3).map(follow).collect());
        assert_eq!(small.tail_batch(), vec![0, 1, 2]);
    }
}
