//! `sinks`: the same events to outside destinations, for the people whose dashboard is closed.
//!
//! Routes from the bus to Slack, Discord, LINE push, Standard Webhooks, email over SMTP, Web Push
//! and the project's own per-user notifications, one message per event or a digest per window,
//! at least once on the wire with one idempotency key per (event, destination): over Redis with
//! several replicas, or in the all-in-one process on the memory bus ([`run_on`] with a
//! [`store::MemoryStore`]).
//!
//! # Layout
//! Dependencies point down this list:
//! - [`run`]: the service: readers, deliverers, `/metrics`, `/healthz`, `/readyz`.
//! - [`reader`]: one task per channel, queueing each routed event once per destination.
//! - [`escalate`]: routes that wait, and send only if no one on a dashboard acknowledged.
//! - [`digest`]: digest windows aligned to the events' ids.
//! - [`deliver`]: one task per destination: bucket, backoff, request, outcome.
//! - [`queue`]: an outbox entry per (event, destination), queued in batches.
//! - [`store`]: the state (outboxes, markers, dead letters, buckets, leases), in Redis or in
//!   this process.
//! - [`pace`]: the loop every task runs: a step, the wait it asks for, a logged failure.
//! - [`metrics`]: Prometheus metrics.
//! - [`config`]: [`SinksConfig`], routes and destinations, checked naming the key; [`Secret`]s
//!   that never print.
//! - [`route`]: [`Route`] matching (channels, types, conditions on payload fields).
//! - [`template`]: a message from an event, or a digest of several.
//! - [`destination`]: one file per kind (Slack, Discord, LINE, Standard Webhooks, the inbox,
//!   email): the request (or mail) a
//!   message becomes, with its idempotency key, and the [`Outcome`] of an answer.
//! - [`key`]: the stable idempotency key of an (event, destination).
//! - [`secret`]: [`Secret`], a credential from env or a file that never prints.

pub mod config;
pub mod deliver;
pub mod destination;
pub mod digest;
pub mod escalate;
pub mod key;
pub mod metrics;
pub mod pace;
pub mod queue;
pub mod reader;
pub mod route;
pub mod secret;
pub mod store;
pub mod template;

use std::{collections::BTreeSet, sync::Arc};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use event_bus::{AnyBus, Broker, Channel};
use tokio_util::sync::CancellationToken;

pub use config::{Secret, SinksConfig, ENV_ALIASES};
pub use destination::{Outcome, Request};
pub use route::Route;

#[derive(Clone, Debug)]
struct App {
    bus: AnyBus,
    metrics: metrics::Metrics,
    started: Arc<std::sync::atomic::AtomicUsize>,
    channels: usize,
}

fn router(app: App) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(a): State<App>| async move { a.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(a): State<App>| async move {
                let reading = a.started.load(std::sync::atomic::Ordering::Relaxed) >= a.channels;
                if !a.bus.health().is_up() {
                    (StatusCode::SERVICE_UNAVAILABLE, "the bus is unreachable").into_response()
                } else if !reading {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "starting: not every channel has a position yet",
                    )
                        .into_response()
                } else {
                    (StatusCode::OK, "ready").into_response()
                }
            }),
        )
        .with_state(app)
}

/// The store over the bus' Redis; the sinks need Redis (their outboxes are durable).
pub fn store_of(bus: &AnyBus) -> anyhow::Result<store::Store> {
    match bus {
        AnyBus::Redis(b) => Ok(store::Store::Redis(Box::new(store::RedisStore::new(
            b.client().clone(),
            bus.config().prefix.clone(),
        )))),
        AnyBus::Memory(_) => anyhow::bail!("the sinks keep their outboxes in Redis: set REDIS_URL"),
    }
}

/// The service, until `shutdown`: a reader per channel some route takes, a deliverer per
/// destination, and the HTTP endpoints.
pub async fn run(config: SinksConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = event_bus::connect(config.bus.clone()).await?;
    let store = store_of(&bus)?;
    let acks = notifications::acks::AckStore::for_bus(&bus);
    let listener = tokio::net::TcpListener::bind(&config.http_addr).await?;
    run_on(config, bus, store, acks, Some(listener), shutdown).await
}

/// [`run`] on a bus and a store of the caller's (the all-in-one process: the memory bus and a
/// [`store::MemoryStore`]), reading the acknowledgements from `acks` (the gateway's, in that
/// process), serving the HTTP endpoints on `listener` if there is one.
pub async fn run_on(
    config: SinksConfig,
    bus: AnyBus,
    store: store::Store,
    acks: notifications::acks::AckStore,
    listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut channels: BTreeSet<Channel> = BTreeSet::new();
    for r in config.routes.values() {
        // Each stream is read on its own: a channel with partitions is several.
        if r.channels.is_empty() {
            channels.extend(config.bus.stream_names());
        } else {
            let named: Vec<Channel> = r.channels.iter().filter_map(|c| Channel::new(c).ok()).collect();
            channels.extend(config.bus.streams(&named));
        }
    }
    let names: Vec<&str> = config.destinations.keys().map(String::as_str).collect();
    let channel_names: Vec<&str> = channels.iter().map(Channel::as_str).collect();
    let metrics = metrics::Metrics::new(&names, &channel_names);
    let routes = config
        .routes
        .iter()
        .map(|(name, r)| {
            let template = r.template.clone().unwrap_or_else(|| {
                let ty = r.types.first().and_then(|t| event_bus::EventType::new(t).ok());
                ty.map_or("{type} {payload.id} {payload.action}", |t| template::builtin(&t))
                    .to_owned()
            });
            Ok(reader::Compiled {
                escalate: escalate::Rule::of(r).map_err(|e| anyhow::anyhow!("routes.{name}.{e}"))?,
                name: name.clone(),
                matcher: route::Matcher::new(r.clone()).map_err(|e| anyhow::anyhow!("routes.{name}.{e}"))?,
                template: template::Template::parse(&template)
                    .map_err(|e| anyhow::anyhow!("routes.{name}.template: {e}"))?,
                digest_ms: r.digest_window_ms,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reader = reader::Reader {
        bus: bus.clone(),
        store: store.clone(),
        routes: Arc::new(routes),
        metrics: metrics.clone(),
        instance: config.instance_id.clone(),
        lease_ttl_ms: config.delivery.lease_ttl_ms,
        poll_ms: config.delivery.poll_ms,
        bound: store::Bound {
            max_backlog: config.delivery.max_backlog,
            max_age_ms: config.delivery.max_age_secs * 1000,
        },
        held: store.held(),
        started: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    let started = reader.started.clone();
    let channel_count = channels.len();
    let mut tasks = Vec::new();
    for c in channels {
        tasks.push(tokio::spawn(reader.clone().run(c, shutdown.clone())));
    }
    let escalating: Vec<&str> = config
        .routes
        .iter()
        .filter(|(_, r)| r.escalate_after_ms > 0)
        .map(|(n, _)| n.as_str())
        .collect();
    metrics.escalating(&escalating);
    for r in reader.routes.iter() {
        let Some(rule) = &r.escalate else { continue };
        let about = serde_json::json!({
            "escalate_after_ms": rule.after_ms, "unless": rule.unless.as_str(), "by": rule.by,
            "destinations": r.matcher.route().destinations,
        });
        if let Err(e) = reader.held.announce(&r.name, &about.to_string()).await {
            tracing::warn!(route = %r.name, error = %e, "sinks: announcing an escalating route failed");
        }
        let e = escalate::Escalator {
            route: r.name.clone(),
            rule: rule.clone(),
            destinations: r.matcher.route().destinations.clone(),
            held: reader.held.clone(),
            acks: acks.clone(),
            store: store.clone(),
            bound: reader.bound,
            instance: reader.instance.clone(),
            lease_ttl_ms: reader.lease_ttl_ms,
            poll_ms: reader.poll_ms,
            metrics: metrics.clone(),
        };
        tasks.push(tokio::spawn(e.run(shutdown.clone())));
    }
    for (name, d) in &config.destinations {
        let deliverer = deliver::Deliverer {
            name: name.clone(),
            kind: d.kind(),
            rate: config
                .delivery
                .rates
                .get(name)
                .copied()
                .unwrap_or_else(|| d.default_rate()),
            store: store.clone(),
            settings: config.delivery.clone(),
            metrics: metrics.clone(),
            instance: config.instance_id.clone(),
        };
        tasks.push(tokio::spawn(deliverer.run(shutdown.clone())));
    }
    let app = App {
        bus,
        metrics,
        started,
        channels: channel_count,
    };
    let server = listener.map(|l| tokio::spawn(service_kit::http::serve(l, router(app), shutdown.clone())));
    tracing::info!(addr = %config.http_addr, instance = %config.instance_id, routes = config.routes.len(), destinations = names.len(), "sinks running");
    shutdown.cancelled().await;
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), t).await;
    }
    if let Some(server) = server {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    }
    Ok(())
}

/// An operator's command on destination `d`: `dead-letters` (prints them, one JSON per line),
/// `replay` (queues them again, keys kept), `enable` (after it was disabled).
pub async fn admin(config: &SinksConfig, command: &str, d: &str) -> anyhow::Result<()> {
    let bus = event_bus::connect(config.bus.clone()).await?;
    let store = store_of(&bus)?;
    match command {
        "dead-letters" => {
            for l in store.dead_letters(d, 10_000).await? {
                let mut fields = l.fields.clone();
                fields.insert("dead_letter_id".into(), l.id.clone());
                println!("{}", serde_json::to_string(&fields)?);
            }
        }
        "replay" => println!("{} dead letters of {d} queued again", store.replay(d).await?),
        _ => {
            store.enable(d).await?;
            println!("{d} enabled");
        }
    }
    Ok(())
}
