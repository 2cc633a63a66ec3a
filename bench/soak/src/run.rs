//! The soak's course: the topology up, the clients connected, then the load, the chaos and the
//! sampler for `minutes`; then the load stops, every client is given time to catch up, and
//! what each received is compared with what was acknowledged.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::watch;

use crate::{
    client::{self, Record, Shared},
    faults::{fault, fault_plan, Faults, Links, Watch},
    hist::Histogram,
    load::{self, Acked, SharedAcked, DIRECT},
    report::{Outcome, Sample},
    topology::{self, Topology, SERVICES},
};

/// What `make soak` takes from the environment.
pub struct Settings {
    /// A network-fault mode instead of the restarts (`SOAK_FAULTS`: a, b or c).
    pub faults: Option<Faults>,
    pub minutes: f64,
    pub clients: usize,
    pub rate: f64,
    pub restart_secs: f64,
    pub churn_secs: f64,
    pub sample_secs: f64,
    pub port_base: u16,
    pub dir: PathBuf,
}

impl Settings {
    pub fn from_env() -> Result<Settings, String> {
        let num = |key: &str, default: f64| -> Result<f64, String> {
            match std::env::var(key) {
                Ok(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| *x > 0.0)
                    .ok_or(format!("{key}: {v:?} is not a positive number")),
                Err(_) => Ok(default),
            }
        };
        let root = root();
        let stamp = load::now_ms() / 1000;
        let faults = match std::env::var("SOAK_FAULTS") {
            Ok(v) if !v.is_empty() => Some(Faults::parse(&v)?),
            _ => None,
        };
        Ok(Settings {
            faults,
            // A fault mode is a shorter run of its own.
            minutes: num("SOAK_MINUTES", if faults.is_some() { 5.0 } else { 30.0 })?,
            clients: num("SOAK_CLIENTS", 1000.0)? as usize,
            rate: num("SOAK_RATE", 200.0)?,
            restart_secs: num("SOAK_RESTART_SECS", 120.0)?,
            churn_secs: num("SOAK_CHURN_SECS", 300.0)?,
            sample_secs: num("SOAK_SAMPLE_SECS", 5.0)?,
            port_base: num("SOAK_PORT_BASE", 18080.0)? as u16,
            dir: std::env::var("SOAK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join(format!("target/soak/{stamp}"))),
        })
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A random secret for this run's tokens (never written anywhere but the processes' env).
fn secret() -> String {
    let mut f = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    let mut buf = [0u8; 32];
    std::io::Read::read_exact(&mut f, &mut buf).expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn token(secret: &str, sub: &str, channel: &str, ttl: u64) -> String {
    let now = load::now_ms() / 1000;
    let claims = json!({"sub": sub, "iat": now, "exp": now + ttl, "channels": [channel]});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("HS256 signs")
}

/// The chaos plan: (second after the load started, what).
fn plan(s: &Settings) -> Vec<(f64, &'static str)> {
    let total = s.minutes * 60.0;
    if let Some(f) = s.faults {
        return fault_plan(f, total);
    }
    let slots: Vec<f64> = (1..)
        .map(|i| i as f64 * s.restart_secs)
        .take_while(|t| *t < total - 30.0)
        .collect();
    let nearest = |x: f64| {
        slots
            .iter()
            .copied()
            .min_by(|a, b| (a - x).abs().total_cmp(&(b - x).abs()))
    };
    let kill = nearest(total / 3.0);
    let mut plan: Vec<(f64, &'static str)> = slots
        .iter()
        .map(|t| {
            (
                *t,
                if Some(*t) == kill {
                    "kill -9 gateway-2"
                } else {
                    "SIGTERM gateway-2"
                },
            )
        })
        .collect();
    if let Some(r) = nearest(total * 2.0 / 3.0) {
        plan.push((r + s.restart_secs / 2.0, "SHUTDOWN SAVE redis"));
    }
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    plan
}

pub async fn soak(s: Settings) -> Result<Outcome, String> {
    std::fs::create_dir_all(&s.dir).map_err(|e| format!("{}: {e}", s.dir.display()))?;
    let secret = secret();
    let ttl = (s.minutes * 60.0) as u64 + 900;
    let mut topo = Topology::new(
        &root(),
        &s.dir.join("up"),
        s.port_base,
        &[
            ("AUTH_MODE", "jwt".into()),
            ("JWT_HS256_SECRET", secret.clone()),
            // The balance after each restart is measured with shedding on, at its intended
            // setting (off by default while its gateway test is ignored: docs/reference.md).
            ("RAKUDA__SHED_ABOVE_FAIR_SHARE", "1.2".into()),
        ],
    );
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let to_redis = s
        .faults
        .map(|_| testkit::faults::FaultProxy::start(loopback(topo.redis)));
    if let Some(p) = &to_redis {
        topo.set_env("UP_REDIS_URL", format!("redis://127.0.0.1:{}", p.port()));
    }
    if s.faults == Some(Faults::Latency) {
        // Little's law: a job takes a few Redis round trips, each 200 ms longer here, so
        // 100 jobs/s need a few hundred at once (the default 32 keeps up with about 30/s).
        topo.set_env("WORKER_CONCURRENCY", "256".into());
    }
    let topo = Arc::new(topo);
    topo.script(&["up"]).await?;
    let links = to_redis.map(|redis| {
        Arc::new(Links {
            clients: testkit::faults::FaultProxy::start(loopback(topo.nginx)),
            redis,
        })
    });
    // The proxies live until the topology is down: dropping one cuts its link for good.
    let result = drive(&s, &topo, &secret, ttl, links.clone()).await;
    let down = topo.script(&["down"]).await;
    let outcome = result?;
    down?;
    Ok(outcome)
}

async fn drive(
    s: &Settings,
    topo: &Arc<Topology>,
    secret: &str,
    ttl: u64,
    links: Option<Arc<Links>>,
) -> Result<Outcome, String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        port: links.as_ref().map_or(topo.nginx, |l| l.clients.port()),
        latency: Histogram::new(),
        connected: Default::default(),
        stop: stop_rx,
        churn_secs: s.churn_secs,
    });
    // A quarter of the clients follow the orders (half the events), the rest one direct channel each.
    let channels: Vec<&'static str> = (0..s.clients)
        .map(|i| if i % 4 == 0 { "orders" } else { DIRECT[i % 3].0 })
        .collect();
    let records: Vec<Arc<Mutex<Record>>> = (0..s.clients).map(|_| Default::default()).collect();
    let mut tasks = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        let t = token(secret, &format!("soak-user-{i}"), ch, ttl);
        tasks.push(tokio::spawn(client::run(
            shared.clone(),
            ch,
            t,
            records[i].clone(),
            0x9E37_79B9 ^ (i as u64) << 20,
        )));
    }
    let ok = testkit::wait_until(Duration::from_secs(60), || {
        let n = shared.connected.load(Relaxed);
        async move { n >= s.clients }
    })
    .await;
    if !ok {
        return Err(format!(
            "only {} of {} clients connected within 60 s",
            shared.connected.load(Relaxed),
            s.clients
        ));
    }
    eprintln!("soak: {} clients connected; load for {} minutes", s.clients, s.minutes);

    let acked: SharedAcked = Arc::new(Mutex::new(Acked::default()));
    let (load_tx, load_rx) = watch::channel(false);
    let direct = tokio::spawn(load::publish_direct(
        topo.redis_url(),
        s.rate - Faults::job_rate(s.faults, s.rate),
        acked.clone(),
        load_rx.clone(),
    ));
    let job_rate = Faults::job_rate(s.faults, s.rate);
    let jobs = tokio::spawn(load::produce_jobs(topo.redis, job_rate, acked.clone(), load_rx));
    let start = Instant::now();
    let up_at_start: Vec<Duration> = records.iter().map(|r| r.lock().unwrap().uptime(start).0).collect();

    let events = Arc::new(Mutex::new(Vec::<(f64, String)>::new()));
    let chaos_links = links.clone();
    let chaos = {
        let (topo, events, plan) = (topo.clone(), events.clone(), plan(s));
        let watch = Watch {
            records: records.clone(),
            channels: channels.clone(),
            acked: acked.clone(),
        };
        tokio::spawn(async move {
            for (at, what) in plan {
                tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
                let began = start.elapsed().as_secs_f64();
                if let Some(l) = &chaos_links {
                    fault(l, what).await;
                    // How long until every client has every event acknowledged before the
                    // link was healed: measured apart, so the plan keeps its times.
                    let (watch, events) = (watch.clone(), events.clone());
                    tokio::spawn(async move {
                        let line = match watch.recovered().await {
                            Ok(d) => format!(
                                "{what} (every client had all acknowledged before it {:.2} s after)",
                                d.as_secs_f64()
                            ),
                            Err((missing, clients)) => format!(
                                "{what} (NOT caught up within 120 s: {missing} events missing at {clients} clients)"
                            ),
                        };
                        eprintln!("soak: t={began:.0}s {line}");
                        events.lock().unwrap().push((began, line));
                    });
                    continue;
                }
                let r = match what {
                    "kill -9 gateway-2" => topo.kill9("gateway-2").await,
                    "SHUTDOWN SAVE redis" => topo.redis_shutdown_save().await,
                    _ => topo.script(&["restart", "gateway-2"]).await,
                };
                let took = start.elapsed().as_secs_f64() - began;
                let line = match r {
                    Ok(()) => format!("{what} (back after {took:.1} s)"),
                    Err(e) => format!("{what} FAILED: {e}"),
                };
                eprintln!("soak: t={began:.0}s {line}");
                events.lock().unwrap().push((began, line));
            }
        })
    };
    let mut samples = Vec::new();
    let total = Duration::from_secs_f64(s.minutes * 60.0);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(s.sample_secs));
    tick.tick().await;
    while start.elapsed() < total {
        tick.tick().await;
        samples.push(sample(topo, &shared, &acked, start).await);
    }
    let load_end = Instant::now();
    let up_at_end: Vec<Duration> = records.iter().map(|r| r.lock().unwrap().uptime(load_end).0).collect();
    chaos.abort();
    let _ = load_tx.send(true);
    let _ = direct.await;
    let _ = jobs.await;
    // Every client is given a minute to receive the rest (the worker finishes the queued jobs).
    let caught_up = testkit::wait_until(Duration::from_secs(60), || {
        let missing = missing(&records, &channels, &acked);
        async move { missing == 0 }
    })
    .await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let window = (load_end - start).as_secs_f64();
    let uptime: Vec<f64> = up_at_start
        .iter()
        .zip(&up_at_end)
        .map(|(a, b)| (*b - *a).as_secs_f64() / window)
        .collect();
    // Taken, not unwrapped: a fault's recovery watch may still hold the acks.
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let events = events.lock().unwrap().clone();
    Ok(Outcome::new(
        s, records, channels, acked, uptime, samples, events, caught_up, start,
    ))
}

/// Acknowledged events some client has not received.
fn missing(records: &[Arc<Mutex<Record>>], channels: &[&'static str], acked: &SharedAcked) -> u64 {
    client::missing(records, channels, &acked.lock().unwrap().by_channel).sum()
}

async fn sample(topo: &Topology, shared: &Shared, acked: &SharedAcked, start: Instant) -> Sample {
    let mut gw = [None; 2];
    let mut ready = [false; 2];
    for (i, port) in topo.gateways.iter().enumerate() {
        if let Some((_, body)) = topology::get(*port, "/metrics").await {
            gw[i] = topology::metric(&body, "realtime_connections_active");
        }
        ready[i] = topology::get(*port, "/readyz").await.is_some_and(|(st, _)| st == 200);
    }
    let rss = SERVICES.map(|name| topo.pid(name).zip(topo.rss_kib(name)));
    Sample {
        t: start.elapsed().as_secs_f64(),
        clients: shared.connected.load(Relaxed),
        gw,
        ready,
        rss,
        latency: shared.latency.take(),
        acked: acked.lock().unwrap().by_channel.values().map(load::Bits::len).sum(),
    }
}
