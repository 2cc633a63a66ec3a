//! The replay/live seam as a property: a stream that resumes from a cursor while events keep
//! arriving gets every event after its cursor exactly once, in each channel's order, however
//! many were missed (several replay pages) and however publishing interleaves with the
//! resume. A real gateway on 127.0.0.1 with the memory bus, a real SSE client.

mod common;

use std::collections::HashMap;

use common::{next_env, Gateway, T};
use event_bus::{Action, Broker, Channel, EventId, EventType, NewEvent, Payload};
use proptest::prelude::*;

const CHANNELS: [(Channel, EventType); 2] = [
    (Channel::ORDERS, EventType::ORDER_RECEIVED),
    (Channel::PRICING, EventType::PRICE_CHANGE),
];

/// Publishes `n` events, alternating channels by `pattern`'s bits; yields every `every` events
/// so a concurrent open interleaves. Returns their ids per channel.
async fn publish(
    gw_bus: &event_bus::AnyBus,
    n: usize,
    pattern: u64,
    every: usize,
    from: usize,
) -> Vec<(usize, EventId)> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let c = ((pattern >> (i % 64)) & 1) as usize;
        let (channel, ty) = &CHANNELS[c];
        let e = NewEvent::new(ty.clone(), Payload::new(format!("e{}", from + i), Action::Updated));
        ids.push((c, gw_bus.publish(channel, e).await.unwrap().id));
        if every > 0 && i % every == 0 {
            tokio::task::yield_now().await;
        }
    }
    ids
}

fn seam_case(before: usize, missed: usize, during: usize, pattern: u64, every: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let gw = Gateway::start(|c| c.connection_queue = 100_000).await;
        let query = "?channels=orders,pricing";
        let mut first = gw.open(query, None).await;
        // A first publish so both channels have a position in the cursor.
        let mut seen = publish(&gw.bus, 2, 0b10, 0, 0).await;
        seen.extend(publish(&gw.bus, before, pattern, 0, 2).await);
        let mut cursor = None;
        for _ in 0..seen.len() {
            let (m, _) = next_env(&mut first).await;
            cursor = m.id;
        }
        drop(first);
        let missed_ids = publish(&gw.bus, missed, pattern.rotate_left(7), 0, 10_000).await;
        // Events published while the resume opens and replays.
        let bus = gw.bus.clone();
        let publisher =
            tokio::spawn(async move { publish(&bus, during, pattern.rotate_left(13), every, 20_000).await });
        let mut resumed = gw.open(query, cursor.as_deref()).await;
        let during_ids = publisher.await.unwrap();
        let mut want: HashMap<usize, Vec<EventId>> = HashMap::new();
        for (c, id) in missed_ids.iter().chain(&during_ids) {
            want.entry(*c).or_default().push(*id);
        }
        let mut got: HashMap<usize, Vec<EventId>> = HashMap::new();
        for _ in 0..missed + during {
            let (_, env) = tokio::time::timeout(T, next_env(&mut resumed))
                .await
                .expect("an event is missing");
            let c = CHANNELS.iter().position(|(ch, _)| *ch == env.channel).unwrap();
            got.entry(c).or_default().push(env.id);
        }
        assert_eq!(got, want, "lost, repeated or reordered across the seam");
        // And nothing more.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(200), resumed.next_message(T))
                .await
                .is_err()
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn nothing_lost_or_repeated_across_the_replay_live_seam(
        before in 0..20usize,
        missed in 0..1300usize,
        during in 0..400usize,
        pattern in any::<u64>(),
        every in 0..8usize,
    ) {
        seam_case(before, missed, during, pattern, every);
    }
}
