//! `orders`: `{orderId, marketplace, total, currency, items}` -> `ORDER_RECEIVED`, once per
//! marketplace order however many times the marketplace delivers its webhook.

use event_bus::{Action, Channel, EventType, NewEvent, Payload};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::job::{check_currency, check_id, check_price, parse, Decision, JobError, JobInput, Plan, Processor};

/// The job data.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderJob {
    /// The marketplace's order id.
    pub order_id: String,
    /// Which marketplace (`ebay`, `amazon`, ...).
    pub marketplace: String,
    /// Order total.
    pub total: f64,
    /// Currency of the total.
    pub currency: String,
    /// Line items (an array), or their number.
    #[serde(default)]
    pub items: Option<Value>,
}

impl OrderJob {
    /// Parses and checks job data (also used by the webhook intake before it enqueues).
    pub fn from_data(data: &Value) -> Result<OrderJob, JobError> {
        let o: OrderJob = parse(data)?;
        check_id("orderId", &o.order_id)?;
        check_id("marketplace", &o.marketplace)?;
        check_price("total", o.total)?;
        check_currency("currency", &o.currency)?;
        o.item_count()?;
        Ok(o)
    }

    fn item_count(&self) -> Result<u64, JobError> {
        match &self.items {
            None => Ok(0),
            Some(Value::Array(a)) => Ok(a.len() as u64),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or(0)),
            Some(other) => Err(JobError::Invalid(format!(
                "items: expected an array of line items or a count, got {other}"
            ))),
        }
    }
}

/// The orders processor.
#[derive(Clone, Debug)]
pub struct Orders {
    /// Queue name.
    pub queue: String,
    /// Days an order is remembered (a redelivery later than this emits again).
    pub remember_days: u64,
}

impl Processor for Orders {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn channel(&self) -> Channel {
        Channel::ORDERS
    }

    fn state_ttl_secs(&self) -> u64 {
        self.remember_days * 86_400
    }

    fn plan<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Result<Plan, JobError>> {
        Box::pin(async move {
            let o = OrderJob::from_data(&job.data)?;
            let entity = format!("{}:{}", o.marketplace, o.order_id);
            let items = o.item_count()?;
            Ok(Plan {
                entity,
                decide: Box::new(move |current| {
                    if current.is_some() {
                        return Ok(Decision::Unchanged("duplicate_order"));
                    }
                    let data = json!({
                        "marketplace": o.marketplace, "total": o.total, "currency": o.currency, "items": items,
                    });
                    Ok(Decision::Emit {
                        event: NewEvent::new(
                            EventType::ORDER_RECEIVED,
                            Payload::new(o.order_id.clone(), Action::Created).with_data(data),
                        ),
                        state: "received".into(),
                    })
                }),
            })
        })
    }
}
