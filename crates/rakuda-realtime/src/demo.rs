//! A shop in miniature: the demo source behind `make run`.

use std::time::Duration;

use event_bus::{Action, Bus, Channel, EventType, NewEvent, Payload};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const MARKETPLACES: [&str; 4] = ["ebay", "amazon", "rakuten", "shopify"];
const STATUSES: [&str; 4] = ["draft", "active", "paused", "ended"];

/// A small deterministic generator: the demo needs variety, not cryptographic randomness.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The shop's state, so events follow from each other (a stock-out, then a back-in-stock).
#[derive(Debug)]
struct Shop {
    rng: Rng,
    stock: Vec<bool>,
    prices: Vec<f64>,
    status: Vec<usize>,
    next_order: u64,
}

impl Shop {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed | 1);
        let prices = (0..40).map(|_| (500 + rng.below(20_000)) as f64 / 100.0).collect();
        Shop {
            stock: vec![true; 40],
            prices,
            status: vec![1; 40],
            next_order: 1000,
            rng,
        }
    }

    fn event(&mut self) -> (Channel, NewEvent) {
        match self.rng.below(10) {
            0..=3 => {
                self.next_order += 1;
                let m = MARKETPLACES[self.rng.below(4) as usize];
                let total = (500 + self.rng.below(30_000)) as f64 / 100.0;
                (
                    Channel::ORDERS,
                    NewEvent::new(
                        EventType::ORDER_RECEIVED,
                        Payload::new(format!("ord_{}", self.next_order), Action::Created).with_data(json!({
                            "marketplace": m, "total": total, "currency": "USD", "items": 1 + self.rng.below(3)
                        })),
                    ),
                )
            }
            4..=5 => {
                let p = self.rng.below(40) as usize;
                let was = self.stock[p];
                self.stock[p] = !was;
                (
                    Channel::INVENTORY,
                    NewEvent::new(
                        EventType::INVENTORY_CHANGE,
                        Payload::new(format!("prod_{p}"), Action::Updated).with_data(json!({
                            "isAvailable": !was, "wasAvailable": was, "priceChanged": false,
                            "price": self.prices[p], "currency": "USD"
                        })),
                    ),
                )
            }
            6..=8 => {
                let l = self.rng.below(40) as usize;
                self.price_change(l)
            }
            _ => {
                let l = self.rng.below(40) as usize;
                let prev = self.status[l];
                self.status[l] = (prev + 1 + self.rng.below(3) as usize) % STATUSES.len();
                (
                    Channel::LISTINGS,
                    NewEvent::new(
                        EventType::LISTING_UPDATE,
                        Payload::new(format!("lst_{l}"), Action::Updated)
                            .with_data(json!({"status": STATUSES[self.status[l]], "previousStatus": STATUSES[prev]})),
                    ),
                )
            }
        }
    }

    fn price_change(&mut self, l: usize) -> (Channel, NewEvent) {
        let old = self.prices[l];
        let factor = 0.9 + self.rng.unit() * 0.2;
        let new = ((old * factor) * 100.0).round() / 100.0;
        self.prices[l] = new;
        (
            Channel::PRICING,
            NewEvent::new(
                EventType::PRICE_CHANGE,
                Payload::new(format!("lst_{l}"), Action::Updated).with_data(json!({
                    "oldPrice": old, "newPrice": new, "currency": "USD", "reason": "competitor"
                })),
            ),
        )
    }
}

/// Where the demo's activity goes: events on the bus, or (with the worker inside, on Redis)
/// BullMQ jobs that the processors turn into the same events.
#[derive(Debug)]
pub enum Output<B> {
    /// Publish the events.
    Bus(B),
    /// Enqueue a job per event.
    #[cfg(feature = "worker")]
    Jobs(crate::pipeline::Queues),
    /// Never built: keeps the enum's shape without the `worker` feature.
    #[cfg(not(feature = "worker"))]
    Jobs(NoQueues),
}

/// Stands for the queues when the binary is built without the `worker` feature.
#[cfg(not(feature = "worker"))]
#[derive(Debug)]
pub enum NoQueues {}

/// Stands for the workers when the binary is built without the `worker` feature.
#[cfg(not(feature = "worker"))]
#[derive(Debug)]
pub enum NoWorkers {}

#[cfg(not(feature = "worker"))]
impl NoWorkers {
    /// Nothing to stop.
    pub async fn stop(self) {}
}

impl<B: Bus> Output<B> {
    async fn send(&self, batch: Vec<(Channel, NewEvent)>) -> anyhow::Result<()> {
        match self {
            Output::Bus(bus) => bus.publish_batch(batch).await.map(drop).map_err(Into::into),
            #[cfg(feature = "worker")]
            Output::Jobs(queues) => queues.enqueue(&batch).await,
            #[cfg(not(feature = "worker"))]
            Output::Jobs(never) => match *never {},
        }
    }
}

/// Publishes demo events at about `rate` per second until `shutdown`; every 30 s or so a
/// repricing burst of 10 to 40 price changes arrives at once, so grouping shows. With
/// `notify` (the gateway's base URL), a stock-out also notifies the development user `dev`
/// through `POST /api/notifications` (with a token from `/api/dev/token` when the gateway hands
/// them out), at most one every 20 s.
pub async fn run<B: Bus>(output: Output<B>, rate: f64, notify: Option<String>, shutdown: CancellationToken) {
    let http = reqwest::Client::new();
    let mut last_notice: Option<std::time::Instant> = None;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut shop = Shop::new(seed);
    let mean_gap = 1.0 / rate;
    loop {
        // Exponential gaps: a believable, irregular rhythm.
        let gap = -mean_gap * (1.0 - shop.rng.unit()).ln();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs_f64(gap.min(mean_gap * 8.0))) => {}
        }
        let batch = if shop.rng.below((30.0 * rate).max(1.0) as u64) == 0 {
            let n = 10 + shop.rng.below(31) as usize;
            (0..n)
                .map(|_| {
                    let l = shop.rng.below(40) as usize;
                    shop.price_change(l)
                })
                .collect()
        } else {
            vec![shop.event()]
        };
        let stockout = batch.iter().find_map(|(_, e)| {
            let d = e.payload.data.as_ref()?;
            (e.event_type == EventType::INVENTORY_CHANGE && d["isAvailable"] == false).then(|| e.payload.id.clone())
        });
        if let Err(e) = output.send(batch).await {
            tracing::warn!(error = %e, "demo source could not publish");
        }
        if let (Some(base), Some(product)) = (&notify, stockout) {
            if last_notice.is_none_or(|t| t.elapsed() >= Duration::from_secs(20)) {
                let token = dev_token(&http, base).await;
                let body = json!({
                    "user_id": "dev", "type": "warning",
                    "title": format!("Out of stock: {product}"),
                    "message": "The inventory check found it unavailable; its listings are paused.",
                });
                let mut req = http
                    .post(format!("{base}/api/notifications"))
                    .json(&body)
                    .timeout(Duration::from_secs(5));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                // Awaited (a local call, bounded): a failed one is tried again at the next
                // stock-out instead of silencing the demo for 20 s.
                match req.send().await.and_then(|r| r.error_for_status()) {
                    Ok(_) => last_notice = Some(std::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "demo source could not notify"),
                }
            }
        }
    }
}

/// A publisher token from the gateway's `/api/dev/token`, if it hands them out.
async fn dev_token(http: &reqwest::Client, base: &str) -> Option<String> {
    let r = http
        .get(format!("{base}/api/dev/token?sub=demo-source&role=publisher&ttl=60"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.error_for_status().ok()?.json().await.ok()?;
    v["token"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shop_events_are_valid_for_their_channels() {
        let config = event_bus::BusConfig::default();
        let mut shop = Shop::new(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let (channel, e) = shop.event();
            let spec = config
                .channels
                .iter()
                .find(|c| c.name == channel)
                .expect("a configured channel");
            assert!(spec.types.contains(&e.event_type));
            seen.insert(channel);
        }
        assert_eq!(seen.len(), 4, "all four channels appear");
    }
}
