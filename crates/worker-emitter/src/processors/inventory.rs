//! `inventory`: `{productId, isAvailable, price, currency, source?}`, or `{productId,
//! sourceUrl, source?}` which the processor checks itself over HTTP, reading availability,
//! price and currency from configured JSON fields. Emits `INVENTORY_CHANGE` only when the
//! availability or the price really changed; the first observation of a product is its
//! baseline. Stock-out and back-in-stock are told apart by `isAvailable` and `wasAvailable`.
//!
//! A `sourceUrl` comes from whoever fills the queue, so its fetch is fenced: no redirect is
//! followed (a 3xx is a failed check), the answer is counted as it streams in and cut off past
//! `inventory.max_response_bytes`, and only public addresses are reached unless
//! `inventory.allow_private_sources` says otherwise. The addresses are checked where the
//! connection is made (a resolver of this module's), so a name that resolves to a public
//! address when asked and to `169.254.169.254` a moment later reaches nothing private either.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

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
    /// A processor with its own HTTP client (timeouts from `settings`; no redirects; public
    /// addresses only unless `settings.allow_private_sources`).
    pub fn new(queue: String, settings: InventorySettings) -> Self {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.http_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.http_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !settings.allow_private_sources {
            http = http.dns_resolver(Arc::new(PublicOnly));
        }
        let http = http.build().expect("HTTP client");
        Inventory { queue, settings, http }
    }

    /// Asks the product's source page (JSON) for its availability and price.
    async fn check(&self, url: &str) -> Result<Stock, JobError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| JobError::Invalid(format!("sourceUrl: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(JobError::Invalid("sourceUrl: must be http or https".into()));
        }
        let s = &self.settings;
        // An address in the URL is not resolved, so the resolver never sees it: checked here.
        let literal = parsed
            .host_str()
            .and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok());
        if let Some(ip) = literal.filter(|ip| !s.allow_private_sources && !is_public(*ip)) {
            return Err(JobError::Invalid(format!(
                "sourceUrl: {ip} is not a public address (inventory.allow_private_sources)"
            )));
        }
        let failed = |what: String| JobError::Transient(format!("source {url}: {what}"));
        let mut resp = self.http.get(parsed).send().await.map_err(|e| {
            if e.is_timeout() {
                failed(format!("no answer within {} ms", s.http_timeout_ms))
            } else if let Some(refused) = private_refusal(&e) {
                JobError::Invalid(format!("sourceUrl: {refused}"))
            } else {
                failed(format!("request failed: {e}"))
            }
        })?;
        if resp.status().is_redirection() {
            return Err(failed(format!(
                "HTTP {}: redirects are not followed (give the final URL)",
                resp.status().as_u16()
            )));
        }
        if !resp.status().is_success() {
            return Err(failed(format!("HTTP {}", resp.status().as_u16())));
        }
        let too_large = || failed(format!("answer larger than {} bytes", s.max_response_bytes));
        if resp.content_length().is_some_and(|n| n > s.max_response_bytes as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
        {
            if body.len() + chunk.len() > s.max_response_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
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

/// Whether `ip` is an address of the public internet: not loopback, private, link-local
/// (`169.254.169.254`, the cloud metadata service), shared (CGNAT), unique-local, multicast,
/// documentation, benchmarking, reserved or unspecified; an IPv4-mapped IPv6 address by its
/// IPv4 one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || b0 == 0
                || b0 >= 240
                || (b0 == 100 && (64..128).contains(&b1))
                || (b0 == 192 && b1 == 0 && a.octets()[2] == 0)
                || (b0 == 198 && (18..20).contains(&b1)))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s0 = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s0 & 0xfe00) == 0xfc00
                || (s0 & 0xffc0) == 0xfe80
                || (s0 == 0x2001 && a.segments()[1] == 0x0db8)
                || (s0 == 0x64 && a.segments()[1] == 0xff9b))
        }
    }
}

/// The resolver of the source checks: the system's, keeping only public addresses; a name
/// with none is refused.
struct PublicOnly;

/// What [`PublicOnly`] refuses with (found again in reqwest's error chain).
#[derive(Debug)]
struct NotPublic(String);

impl std::fmt::Display for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves to no public address (inventory.allow_private_sources)",
            self.0
        )
    }
}

impl std::error::Error for NotPublic {}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(NotPublic(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver's refusal inside a request's error, if that is why it failed.
fn private_refusal(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(n) = s.downcast_ref::<NotPublic>() {
            return Some(n.to_string());
        }
        source = s.source();
    }
    None
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

    fn local(max_response_bytes: usize) -> Inventory {
        let settings = InventorySettings {
            allow_private_sources: true,
            max_response_bytes,
            http_timeout_ms: 10_000,
            ..Default::default()
        };
        Inventory::new("inventory".into(), settings)
    }

    /// A source on 127.0.0.1 that answers each request with `head`, then (with `endless`)
    /// body bytes until the client goes away; the paths it was asked for.
    async fn source(head: &'static str, endless: bool) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let line = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    seen.lock()
                        .unwrap()
                        .push(line.split(' ').nth(1).unwrap_or("").to_owned());
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 64 * 1024];
                    // Bounded: about 1 GiB at most, far more than any limit read here.
                    for _ in 0..(if endless { 16_384 } else { 0 }) {
                        if conn.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, asked)
    }

    #[tokio::test]
    async fn an_answer_is_cut_off_at_its_limit_as_it_streams() {
        let (port, _) = source(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            true,
        )
        .await;
        let Err(JobError::Transient(msg)) = local(4096).check(&format!("http://127.0.0.1:{port}/p")).await else {
            panic!("an endless answer must fail")
        };
        assert!(msg.contains("larger than 4096 bytes"), "{msg}");
        // A declared length past the limit fails before reading.
        let (port, _) = source("HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n", false).await;
        let Err(JobError::Transient(msg)) = local(4096).check(&format!("http://127.0.0.1:{port}/p")).await else {
            panic!("a declared length past the limit must fail")
        };
        assert!(msg.contains("larger than 4096 bytes"), "{msg}");
    }

    #[tokio::test]
    async fn no_redirect_is_followed() {
        let (port, asked) = source(
            "HTTP/1.1 302 Found\r\nlocation: /metadata\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .await;
        let Err(JobError::Transient(msg)) = local(4096).check(&format!("http://127.0.0.1:{port}/p")).await else {
            panic!("a redirect must fail the check")
        };
        assert!(msg.contains("HTTP 302") && msg.contains("redirects"), "{msg}");
        assert_eq!(*asked.lock().unwrap(), ["/p"], "the redirect was followed");
    }

    #[tokio::test]
    async fn only_public_addresses_unless_allowed() {
        let (port, asked) = source("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", false).await;
        let inv = Inventory::new("inventory".into(), InventorySettings::default());
        for url in [
            format!("http://127.0.0.1:{port}/p"),
            format!("http://localhost:{port}/p"),
            format!("http://[::1]:{port}/p"),
            format!("http://[::ffff:127.0.0.1]:{port}/p"),
            "http://169.254.169.254/latest/meta-data".into(),
            "http://10.0.0.1/p".into(),
        ] {
            match inv.check(&url).await {
                Err(JobError::Invalid(msg)) => assert!(msg.contains("allow_private_sources"), "{url}: {msg}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(asked.lock().unwrap().is_empty(), "a private address was reached");
        for (ip, public) in [
            ("8.8.8.8", true),
            ("2606:4700::1111", true),
            ("100.64.0.1", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("0.0.0.0", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:10.0.0.1", false),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[tokio::test]
    async fn https_sources_are_supported_and_failures_are_transient() {
        let inv = local(1 << 20);
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
