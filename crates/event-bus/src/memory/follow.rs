//! One memory subscription's reader: drains each channel past its position, then waits for a
//! publish; takes the [`Change`]s of its [`crate::Follower`] between two passes.

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    envelope::{EventId, SharedEnvelope},
    name::Channel,
    subscription::{Change, Delivery},
};

/// What the reader needs of the bus's rings.
pub(super) trait Rings: Send + Sync + 'static {
    /// What follows `pos` in `channel`: where it goes on after a gap, or up to `limit` events;
    /// `None` when the channel is not the bus's.
    fn after(&self, channel: &Channel, pos: EventId, limit: usize) -> Option<(Option<EventId>, Vec<SharedEnvelope>)>;
    /// Bumped after every publish.
    fn ticks(&self) -> watch::Receiver<u64>;
    /// Counts a resync, or `n` events delivered.
    fn resynced(&self);
    fn delivered(&self, n: u64);
}

pub(super) async fn run(
    bus: impl Rings,
    mut positions: Vec<(Channel, EventId)>,
    limit: usize,
    tx: mpsc::Sender<Delivery>,
    mut changes: mpsc::Receiver<Change>,
    stop: CancellationToken,
) {
    let mut tick = bus.ticks();
    loop {
        tick.borrow_and_update();
        while let Ok(c) = changes.try_recv() {
            apply(&mut positions, c);
        }
        let mut progressed = false;
        for (channel, pos) in positions.iter_mut() {
            let Some((resync, batch)) = bus.after(channel, *pos, limit) else {
                return;
            };
            if let Some(resume_from) = resync {
                bus.resynced();
                *pos = resume_from;
                progressed = true;
                let d = Delivery::Resync {
                    channel: channel.clone(),
                    resume_from,
                };
                if tx.send(d).await.is_err() {
                    return;
                }
            }
            progressed |= !batch.is_empty();
            for env in batch {
                *pos = env.id;
                if tx.send(Delivery::Event(env)).await.is_err() {
                    return;
                }
                bus.delivered(1);
            }
        }
        if !progressed {
            tokio::select! {
                changed = tick.changed() => if changed.is_err() { return },
                Some(c) = changes.recv() => apply(&mut positions, c),
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
            }
        }
    }
}

/// Follows a channel from a position (unless it is followed already), or stops following one.
fn apply(positions: &mut Vec<(Channel, EventId)>, change: Change) {
    match change {
        Change::Follow(channel, from) => {
            if !positions.iter().any(|(c, _)| *c == channel) {
                positions.push((channel, from));
            }
        }
        Change::Unfollow(channel) => positions.retain(|(c, _)| *c != channel),
    }
}
