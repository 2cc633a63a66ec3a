//! Queueing deliveries, as the readers and the escalations do it: one outbox entry per
//! (event, destination), and a batch queued in one round trip with its metrics.

use event_bus::{Envelope, Timestamp};

use crate::{
    metrics::Metrics,
    store::{Bound, Queued, Store, StoreError},
};

/// One delivery of `text` about `event` (standing for `count` events) to `d`, keyed `key`, for
/// route `route`.
pub fn delivery(d: &str, key: uuid::Uuid, route: &str, text: &str, count: usize, event: &Envelope) -> Queued {
    let key = key.to_string();
    let fields = vec![
        ("key", key.clone()),
        ("route", route.to_owned()),
        ("text", text.to_owned()),
        ("count", count.to_string()),
        ("event", serde_json::to_string(event).unwrap_or_default()),
        ("queued_at", Timestamp::now_ms().to_string()),
    ];
    Queued {
        destination: d.to_owned(),
        key,
        fields,
    }
}

/// Queues `batch`, in order, in one round trip, each outbox within `bound`; counts the new ones
/// and the ones the bound moved to the dead letters.
pub async fn flush(store: &Store, bound: Bound, metrics: &Metrics, batch: Vec<Queued>) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let queued = store.enqueue_many(&batch, bound).await?;
    for (q, done) in batch.iter().zip(queued) {
        if done.new {
            metrics.queued.with_label_values(&[&q.destination]).inc();
        }
        if done.dead > 0 {
            let d = q.destination.as_str();
            tracing::warn!(destination = d, dead = done.dead, "sinks: the outbox is past delivery.max_backlog or delivery.max_age_secs; its oldest deliveries are dead letters now");
            metrics.overflow.with_label_values(&[d]).inc_by(done.dead);
            metrics.dead_letters.with_label_values(&[d]).inc_by(done.dead);
        }
    }
    Ok(())
}
