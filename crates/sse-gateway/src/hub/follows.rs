//! Subscriptions on demand: the hub follows a channel upstream from the first stream that needs
//! it, and stops `grace` after the last one left, so a gateway hears only what its streams
//! follow (`subscriptions_on_demand`).
//!
//! Following a channel reads its head, sets every shard's position in it there, and has the
//! upstream subscription follow it from there: each event after the head reaches the shards,
//! so a stream that registers once the follow is done gets every later event through its
//! queue and replays what came before from the bus, as every stream does. Follows and
//! unfollows take turns (one lock); a stream's [`Following`] counts it in each of its
//! channels until it is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use event_bus::{AnyBus, Broker, BusError, Channel, EventId, Follower};
use prometheus::IntGauge;

/// Sets every shard's position in a channel (`None`: forgets it, the channel no longer followed).
pub(crate) type SetHead = Box<dyn Fn(&Channel, Option<EventId>) + Send + Sync>;

/// The channels followed on demand and the streams that need each.
pub(crate) struct Follows {
    bus: AnyBus,
    follower: Follower,
    set_head: SetHead,
    grace: Duration,
    followed: IntGauge,
    /// Channels followed from the start, outside these (counted in `followed`).
    always: usize,
    /// Follows and unfollows take turns.
    changing: tokio::sync::Mutex<()>,
    /// Per followed channel: the streams that need it, and since when none has.
    refs: Mutex<HashMap<Channel, (usize, Option<Instant>)>>,
}

/// A stream's hold on its channels: they stay followed while it lives.
pub struct Following {
    follows: Option<Arc<Follows>>,
    channels: Vec<Channel>,
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Following").field("channels", &self.channels).finish()
    }
}

impl Following {
    /// A hold on nothing: every channel is followed from the start.
    pub(crate) fn always() -> Self {
        Following {
            follows: None,
            channels: Vec::new(),
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let Some(follows) = &self.follows else { return };
        let mut refs = follows.refs.lock().unwrap();
        for c in &self.channels {
            if let Some((n, idle)) = refs.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    *idle = Some(Instant::now());
                }
            }
        }
    }
}

impl Follows {
    pub(crate) fn new(
        bus: AnyBus,
        follower: Follower,
        set_head: SetHead,
        grace: Duration,
        followed: IntGauge,
        always: usize,
    ) -> Arc<Self> {
        followed.set(always as i64);
        Arc::new(Follows {
            bus,
            follower,
            set_head,
            grace,
            followed,
            always,
            changing: tokio::sync::Mutex::new(()),
            refs: Mutex::new(HashMap::new()),
        })
    }

    /// Follows whichever of `channels` is not followed yet, and holds them all for one stream.
    pub(crate) async fn follow(self: &Arc<Self>, channels: &[Channel]) -> Result<Following, BusError> {
        let _turn = self.changing.lock().await;
        let missing: Vec<Channel> = {
            let refs = self.refs.lock().unwrap();
            channels.iter().filter(|c| !refs.contains_key(*c)).cloned().collect()
        };
        if !missing.is_empty() {
            // One read for every channel new here.
            let head = self.bus.head(&missing).await?;
            for c in missing {
                let at = head.get(&c).unwrap_or(EventId::ZERO);
                (self.set_head)(&c, Some(at));
                self.follower.follow(c.clone(), at).await?;
                tracing::debug!(channel = %c, "following");
                self.refs.lock().unwrap().insert(c, (0, Some(Instant::now())));
            }
        }
        let mut refs = self.refs.lock().unwrap();
        for c in channels {
            let (n, idle) = refs.get_mut(c).expect("followed above");
            *n += 1;
            *idle = None;
        }
        self.followed.set((self.always + refs.len()) as i64);
        Ok(Following {
            follows: Some(self.clone()),
            channels: channels.to_vec(),
        })
    }

    /// Stops following each channel no stream has needed for `grace`.
    pub(crate) async fn sweep(&self) {
        let _turn = self.changing.lock().await;
        let idle: Vec<Channel> = self
            .refs
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (n, idle))| *n == 0 && idle.is_some_and(|t| t.elapsed() >= self.grace))
            .map(|(c, _)| c.clone())
            .collect();
        for c in idle {
            if self.follower.unfollow(c.clone()).await.is_err() {
                return;
            }
            self.refs.lock().unwrap().remove(&c);
            (self.set_head)(&c, None);
            tracing::debug!(channel = %c, "no longer following");
        }
        self.followed
            .set((self.always + self.refs.lock().unwrap().len()) as i64);
    }

    /// Sweeps every half `grace` (at least every second) until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let every = (self.grace / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep().await,
                _ = stop.cancelled() => return,
            }
        }
    }
}
