//! Emitting from any Rust worker process by linking `event-bus` directly, without a queue.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p worker-emitter --example link_bus
//! ```
//! (Without `REDIS_URL` it runs on the in-memory bus and only shows the calls.)
//!
//! Two habits make it safe to run again after a crash:
//! - one idempotency key per unit of work (here: the sync run and the listing), so a retry
//!   publishes nothing twice;
//! - a change event is published *guarded* by the entity's last state, which moves with it,
//!   so two workers deciding about one listing at once cannot both emit, nor emit out of order.

use event_bus::{Action, BusConfig, Channel, EntityState, EventType, Guard, Guarded, NewEvent, Payload};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bus = event_bus::connect(BusConfig {
        redis_url: std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()),
        ..Default::default()
    })
    .await?;
    let run = "price-sync-2026-11-23T08:00";
    for (listing, new_price) in [("lst_1", 19.5), ("lst_2", 42.0)] {
        // The state this worker knows, and what it decides from it.
        let current = bus.state(&Channel::PRICING, listing).await?;
        let old_price: Option<f64> = current.as_deref().and_then(|s| s.parse().ok());
        if old_price == Some(new_price) {
            println!("{listing}: unchanged");
            continue;
        }
        let event = NewEvent::new(
            EventType::PRICE_CHANGE,
            Payload::new(listing, Action::Updated).with_data(json!({
                "oldPrice": old_price, "newPrice": new_price, "currency": "USD", "reason": "sync",
            })),
        )
        .with_idempotency_key(format!("{run}:{listing}"));
        let guard = Guard::new(listing, current, new_price.to_string());
        match bus.publish_guarded(&Channel::PRICING, event, guard).await? {
            Guarded::Done(p) if p.duplicate => println!("{listing}: already emitted as {}", p.id),
            Guarded::Done(p) => println!("{listing}: emitted {}", p.id),
            Guarded::Conflict { current } => {
                println!("{listing}: another worker moved it to {current:?}; decide again")
            }
        }
    }
    Ok(())
}
