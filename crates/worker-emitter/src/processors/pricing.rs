//! `pricing`: `{listingId, newPrice, currency, reason}` -> `PRICE_CHANGE` with
//! `{oldPrice, newPrice}` when the price changed (`oldPrice` null for a listing's first price).

use event_bus::{Action, Channel, EventType, NewEvent, Payload};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::job::{check_currency, check_id, check_price, parse, Decision, JobError, JobInput, Plan, Processor};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceJob {
    listing_id: String,
    new_price: f64,
    currency: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct PriceState {
    price: f64,
    currency: String,
}

/// The pricing processor.
#[derive(Clone, Debug)]
pub struct Pricing {
    /// Queue name.
    pub queue: String,
}

impl Processor for Pricing {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn channel(&self) -> Channel {
        Channel::PRICING
    }

    fn plan<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Result<Plan, JobError>> {
        Box::pin(async move {
            let p: PriceJob = parse(&job.data)?;
            check_id("listingId", &p.listing_id)?;
            check_price("newPrice", p.new_price)?;
            check_currency("currency", &p.currency)?;
            Ok(Plan {
                entity: p.listing_id.clone(),
                decide: Box::new(move |current| {
                    let old: Option<PriceState> = current.and_then(|c| serde_json::from_str(c).ok());
                    if old
                        .as_ref()
                        .is_some_and(|o| o.currency == p.currency && crate::job::same_price(o.price, p.new_price))
                    {
                        return Ok(Decision::Unchanged("unchanged"));
                    }
                    let state = PriceState {
                        price: p.new_price,
                        currency: p.currency.clone(),
                    };
                    let mut data = json!({
                        "oldPrice": old.as_ref().map(|o| o.price),
                        "newPrice": p.new_price,
                        "currency": p.currency,
                    });
                    if let Some(r) = &p.reason {
                        data["reason"] = json!(r);
                    }
                    Ok(Decision::Emit {
                        event: NewEvent::new(
                            EventType::PRICE_CHANGE,
                            Payload::new(p.listing_id.clone(), Action::Updated).with_data(data),
                        ),
                        state: serde_json::to_string(&state).expect("state serialises"),
                    })
                }),
            })
        })
    }
}
