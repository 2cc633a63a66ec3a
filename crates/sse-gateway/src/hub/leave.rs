//! Telling streams to leave: all of them on a drain, or those above the instance's fair share
//! ([`super::balance`]).

use std::sync::atomic::Ordering::Relaxed;

use super::{fan_out::Hub, queue::Signals, shard};

impl Hub {
    /// Tells every stream that the server drains (and every stream that registers from now on).
    pub fn drain(&self) {
        self.inner.draining.store(true, Relaxed);
        for shard in &self.inner.shards {
            shard::signal_all(shard, Signals::DRAIN);
        }
    }

    /// Has `n` streams leave: those told before and not gone yet count, and the rest are told
    /// to reconnect (through the load balancer), each at a random point of the drain spread,
    /// as on a drain. Returns how many were told now.
    pub fn shed(&self, n: usize) -> usize {
        let leaving: usize = self
            .inner
            .shards
            .iter()
            .map(|s| {
                let reg = s.registry.lock().unwrap();
                reg.conns.values().filter(|c| c.info.shed.load(Relaxed)).count()
            })
            .sum();
        let n = n.saturating_sub(leaving);
        let mut told = 0;
        for shard in &self.inner.shards {
            for c in shard.registry.lock().unwrap().conns.values() {
                if told == n {
                    return told;
                }
                if !c.info.shed.swap(true, Relaxed) {
                    c.tx.signal(Signals::SHED);
                    told += 1;
                }
            }
        }
        told
    }
}
