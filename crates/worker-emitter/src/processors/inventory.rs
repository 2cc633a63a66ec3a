//! `inventory`: `{productId, isAvailable, price, currency, source?}`, or `{productId,
//! sourceUrl, source?}` which the processor checks itself over HTTP, reading availability,
//! price and currency from configured JSON fields. Emits `INVENTORY_CHANGE` only when the
//! availability or the price really changed; the first observation of a product is its
//! baseline. Stock-out and back-in-stock are told apart by `isAvailable` and `wasAvailable`.

use std::time::Duration;

use event_bus::{Action, Channel, EventType, NewEvent, Payload};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    config::InventorySettings,
    job::{check_currency, check_id, check_price, parse, Decision, JobError, JobInput, Plan, Processor},
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InventoryJob {
    product_id: String,
    #[serde(default)]
    is_available: Option<bool>,
    #[serde(default)]
    price: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    source_url: Option<String>,
}

/// What is known about a product: the state kept between jobs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stock {
    /// In stock.
    pub available: bool,
    /// Price.
    pub price: f64,
    /// Currency of the price.
    pub currency: String,
}

/// The inventory processor.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// Queue name.
    pub queue: String,
    /// Where to read a source's answer, and how long to wait for it.
    pub settings: InventorySettings,
    /// The HTTP client for `sourceUrl` checks.
    pub http: reqwest::Client,
}

impl Inventory {
    /// A processor with its own HTTP client (timeouts from `settings`).
    pub fn new(queue: String, settings: InventorySettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.http_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.http_timeout_ms))
            .build()
            .expect("HTTP client");
        Inventory { queue, settings, http }
    }

    /// Asks the product's source page (JSON) for its availability and price.
    async fn check(&self, url: &str) -> Result<Stock, JobError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| JobError::Invalid(format!("sourceUrl: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(JobError::Invalid("sourceUrl: must be http or https".into()));
        }
        let s = &self.settings;
        let failed = |what: String| JobError::Transient(format!("source {url}: {what}"));
        let resp = self.http.get(parsed).send().await.map_err(|e| {
            if e.is_timeout() {
                failed(format!("no answer within {} ms", s.http_timeout_ms))
            } else {
                failed(format!("request failed: {e}"))
            }
        })?;
        if !resp.status().is_success() {
            return Err(failed(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?;
        if body.len() > s.max_response_bytes {
            return Err(failed(format!("answer larger than {} bytes", s.max_response_bytes)));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| failed(format!("answer is not JSON: {e}")))?;
        let available = match lookup(&v, &s.available_field) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n > 0.0),
            other => {
                return Err(failed(format!(
                    "field {:?} is not a boolean or a stock count: {other:?}",
                    s.available_field
                )))
            }
        };
        let price = match lookup(&v, &s.price_field) {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(Value::String(t)) => t.trim().parse().unwrap_or(f64::NAN),
            other => return Err(failed(format!("field {:?} is not a price: {other:?}", s.price_field))),
        };
        let currency = match lookup(&v, &s.currency_field) {
            Some(Value::String(c)) => c.clone(),
            None => s.default_currency.clone(),
            other => {
                return Err(failed(format!(
                    "field {:?} is not a currency: {other:?}",
                    s.currency_field
                )))
            }
        };
        check_price(&s.price_field, price).map_err(|e| failed(e.to_string()))?;
        check_currency(&s.currency_field, &currency).map_err(|e| failed(e.to_string()))?;
        Ok(Stock {
            available,
            price,
            currency,
        })
    }
}

/// `a.b.c` inside a JSON value.
fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, part| v.get(part))
}

impl Processor for Inventory {
    fn queue(&self) -> &str {
        &self.queue
    }

    fn channel(&self) -> Channel {
        Channel::INVENTORY
    }

    fn plan<'a>(&'a self, job: &'a JobInput) -> BoxFuture<'a, Result<Plan, JobError>> {
        Box::pin(async move {
            let j: InventoryJob = parse(&job.data)?;
            check_id("productId", &j.product_id)?;
            let now = match (&j.source_url, j.is_available, j.price, &j.currency) {
                (Some(url), None, None, None) => self.check(url).await?,
                (None, Some(available), Some(price), Some(currency)) => {
                    check_price("price", price)?;
                    check_currency("currency", currency)?;
                    Stock {
                        available,
                        price,
                        currency: currency.clone(),
                    }
                }
                _ => {
                    return Err(JobError::Invalid(
                        "give either isAvailable, price and currency, or a sourceUrl to check".into(),
                    ))
                }
            };
            let source = j.source.clone().or_else(|| j.source_url.clone());
            Ok(Plan {
                entity: j.product_id.clone(),
                decide: Box::new(move |current| decide(&j.product_id, &now, source.as_deref(), current)),
            })
        })
    }
}

fn decide(product: &str, now: &Stock, source: Option<&str>, current: Option<&str>) -> Result<Decision, JobError> {
    let state = serde_json::to_string(now).expect("state serialises");
    let Some(was) = current.and_then(|c| serde_json::from_str::<Stock>(c).ok()) else {
        return Ok(Decision::Baseline { state });
    };
    let price_changed = was.currency != now.currency || !crate::job::same_price(was.price, now.price);
    if was.available == now.available && !price_changed {
        return Ok(Decision::Unchanged("unchanged"));
    }
    let mut data = json!({
        "isAvailable": now.available,
        "wasAvailable": was.available,
        "priceChanged": price_changed,
        "price": now.price,
        "currency": now.currency,
    });
    if price_changed {
        data["previousPrice"] = json!(was.price);
    }
    if let Some(s) = source {
        data["source"] = json!(s);
    }
    Ok(Decision::Emit {
        event: NewEvent::new(
            EventType::INVENTORY_CHANGE,
            Payload::new(product, Action::Updated).with_data(data),
        ),
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(available: bool, price: f64) -> Stock {
        Stock {
            available,
            price,
            currency: "USD".into(),
        }
    }

    #[test]
    fn only_real_changes_emit_and_stock_out_is_distinguishable() {
        let s = |st: &Stock| serde_json::to_string(st).unwrap();
        assert!(matches!(
            decide("p", &stock(true, 10.0), None, None),
            Ok(Decision::Baseline { .. })
        ));
        assert_eq!(
            decide("p", &stock(true, 10.0), None, Some(&s(&stock(true, 10.0000001)))),
            Ok(Decision::Unchanged("unchanged"))
        );
        let Ok(Decision::Emit { event, .. }) = decide("p", &stock(false, 10.0), None, Some(&s(&stock(true, 10.0))))
        else {
            panic!("a stock-out must emit")
        };
        let d = event.payload.data.unwrap();
        assert_eq!(
            (d["isAvailable"].as_bool(), d["wasAvailable"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(d["priceChanged"], false);
        let Ok(Decision::Emit { event, .. }) =
            decide("p", &stock(true, 12.5), Some("shop"), Some(&s(&stock(true, 10.0))))
        else {
            panic!("a price change must emit")
        };
        let d = event.payload.data.unwrap();
        assert_eq!(
            (d["previousPrice"].as_f64(), d["source"].as_str()),
            (Some(10.0), Some("shop"))
        );
    }

    #[tokio::test]
    async fn https_sources_are_supported_and_failures_are_transient() {
        let inv = Inventory::new("inventory".into(), InventorySettings::default());
        // Nothing listens on the discard port: a connection error, not "https unsupported".
        let Err(JobError::Transient(msg)) = inv.check("https://127.0.0.1:9/p").await else {
            panic!("a refused connection is a transient failure")
        };
        assert!(msg.contains("request failed") && !msg.contains("scheme"), "{msg}");
        assert!(matches!(
            inv.check("ftp://127.0.0.1/p").await,
            Err(JobError::Invalid(_))
        ));
    }

    #[test]
    fn paths() {
        let v = json!({"a": {"b": {"c": 1}}});
        assert_eq!(lookup(&v, "a.b.c"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.x"), None);
    }
}
