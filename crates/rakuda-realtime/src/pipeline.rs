//! The designed pipeline in one process (`make run` with `REDIS_URL`): the worker-emitter's
//! processors take jobs from the BullMQ queues, and the demo shop puts its activity there as
//! jobs (what the Node.js code does in production) instead of publishing events itself.

use bullmq::{JobOptions, Queue, QueueOptions};
use event_bus::{Channel, EventType, NewEvent};
use serde_json::{json, Value};
use worker_emitter::EmitterConfig;

/// The worker's settings here: its defaults (queues `inventory`, `orders`, `pricing`,
/// `listings`, prefix `bull`) on the gateway's bus.
pub fn settings(gateway: &sse_gateway::GatewayConfig) -> EmitterConfig {
    EmitterConfig {
        instance_id: format!("{}-worker", gateway.instance_id),
        bus: gateway.bus.clone(),
        ..Default::default()
    }
}

/// The job a demo event stands for: the queue's kind, the job's name, its data
/// (`proto-schemas/job-*.schema.json`); the processor turns it back into that event.
pub fn job_of(channel: &Channel, event: &NewEvent) -> Option<(&'static str, &'static str, Value)> {
    let id = &event.payload.id;
    let d = event.payload.data.clone().unwrap_or(Value::Null);
    let job = match (channel.as_str(), &event.event_type) {
        ("orders", t) if *t == EventType::ORDER_RECEIVED => (
            "orders",
            "order",
            json!({"orderId": id, "marketplace": d["marketplace"], "total": d["total"],
                   "currency": d["currency"], "items": d["items"]}),
        ),
        ("inventory", t) if *t == EventType::INVENTORY_CHANGE => (
            "inventory",
            "inventory-check",
            json!({"productId": id, "isAvailable": d["isAvailable"], "price": d["price"],
                   "currency": d["currency"], "source": "demo"}),
        ),
        ("pricing", t) if *t == EventType::PRICE_CHANGE => (
            "pricing",
            "price-sync",
            json!({"listingId": id, "newPrice": d["newPrice"], "currency": d["currency"], "reason": d["reason"]}),
        ),
        ("listings", t) if *t == EventType::LISTING_UPDATE => (
            "listings",
            "listing-update",
            json!({"listingId": id, "status": d["status"]}),
        ),
        _ => return None,
    };
    Some(job)
}

/// A kind's name with a static lifetime (the four built-in ones).
fn kind_name(kind: &str) -> &'static str {
    ["inventory", "orders", "pricing", "listings"]
        .into_iter()
        .find(|k| *k == kind)
        .unwrap_or("other")
}

/// The four queues, as a producer holds them.
pub struct Queues {
    queues: Vec<(&'static str, Queue)>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").field("queues", &self.queues.len()).finish()
    }
}

impl Queues {
    /// Opens the queues of `config` on its Redis.
    pub async fn open(config: &EmitterConfig) -> anyhow::Result<Queues> {
        let mut queues = Vec::new();
        for kind in config.kinds() {
            let options = QueueOptions {
                connection: bullmq::options::RedisConnectionOptions {
                    url: config.bus.redis_url.clone().unwrap_or_default(),
                    ..Default::default()
                },
                prefix: config.queue_prefix.clone(),
                ..Default::default()
            };
            let name = config.queue_of(kind).to_owned();
            let q = Queue::with_options(&name, options)
                .await
                .map_err(|e| anyhow::anyhow!("queue {name}: {e}"))?;
            queues.push((kind_name(kind), q));
        }
        Ok(Queues { queues })
    }

    /// Enqueues one job per event, retried like production jobs (3 attempts, exponential
    /// backoff) and not kept once done (the demo runs for hours).
    pub async fn enqueue(&self, batch: &[(Channel, NewEvent)]) -> anyhow::Result<()> {
        for (channel, event) in batch {
            let Some((kind, name, data)) = job_of(channel, event) else {
                continue;
            };
            let Some((_, q)) = self.queues.iter().find(|(k, _)| *k == kind) else {
                continue;
            };
            let opts = JobOptions {
                attempts: Some(3),
                backoff: Some(bullmq::types::BackoffStrategy::Exponential(200)),
                remove_on_complete: Some(bullmq::types::RemoveOnFinish::Count(1000)),
                remove_on_fail: Some(bullmq::types::RemoveOnFinish::Count(1000)),
                ..Default::default()
            };
            q.add(name, data)
                .options(opts)
                .await
                .map_err(|e| anyhow::anyhow!("add to {kind}: {e}"))?;
        }
        Ok(())
    }
}
