//! The soak's network-fault modes (`SOAK_FAULTS`): which faults, when, on which link
//! (`testkit::faults::FaultProxy` between the clients and nginx, and between every service and
//! Redis), and how long the clients take to have everything again after each.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{client::Record, load::SharedAcked};

/// A network-fault mode (`SOAK_FAULTS`): faults on the links instead of restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// a. 2 s cuts between the clients and the load balancer, every 30 s.
    ClientCuts,
    /// b. 2 s cuts between the services and Redis, every 30 s.
    RedisCuts,
    /// c. 200 ms ± 50 ms of latency on both links, and each link's connections reset once a
    /// minute.
    Latency,
}

impl Faults {
    pub fn parse(v: &str) -> Result<Faults, String> {
        match v {
            "a" => Ok(Faults::ClientCuts),
            "b" => Ok(Faults::RedisCuts),
            "c" => Ok(Faults::Latency),
            _ => Err(format!("SOAK_FAULTS: {v:?} is not a, b or c")),
        }
    }

    /// BullMQ order jobs per second of `rate`: half, but for c, whose +200 ms link holds the
    /// worker-emitter to about 20 jobs/s (it fetches a job per round trip): at half of 200/s the
    /// jobs would pile up in Redis, late rather than lost, and measure the worker's fetch loop
    /// instead of delivery.
    pub fn job_rate(faults: Option<Faults>, rate: f64) -> f64 {
        match faults {
            Some(Faults::Latency) => (rate / 2.0).min(10.0),
            _ => rate / 2.0,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Faults::ClientCuts => "a. 2 s cuts between the clients and the load balancer, every 30 s",
            Faults::RedisCuts => "b. 2 s cuts between the services and Redis, every 30 s",
            Faults::Latency => "c. 200 ms +- 50 ms latency on both links, each link's connections reset once a minute",
        }
    }
}

/// The faults of a mode: (second after the load started, what).
pub fn fault_plan(f: Faults, total: f64) -> Vec<(f64, &'static str)> {
    let every = |first: f64, step: f64, what: &'static str| {
        (0..)
            .map(move |i| first + i as f64 * step)
            .take_while(move |t| *t < total - 20.0)
            .map(move |t| (t, what))
    };
    let mut plan: Vec<(f64, &'static str)> = match f {
        Faults::ClientCuts => every(30.0, 30.0, "cut clients-lb 2 s").collect(),
        Faults::RedisCuts => every(30.0, 30.0, "cut services-redis 2 s").collect(),
        Faults::Latency => {
            let mut p = vec![(0.0, "latency 200 ms +- 50 ms on both links")];
            p.extend(every(20.0, 60.0, "reset clients-lb"));
            p.extend(every(50.0, 60.0, "reset services-redis"));
            p
        }
    };
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    plan
}

/// The fault proxies of a fault mode: between the clients and nginx, and between every
/// service and Redis (`UP_REDIS_URL`).
pub struct Links {
    pub clients: testkit::faults::FaultProxy,
    pub redis: testkit::faults::FaultProxy,
}

/// Applies one fault of the plan; returns once the link is healed (a cut) or at once.
pub async fn fault(l: &Links, what: &str) {
    match what {
        "cut clients-lb 2 s" | "cut services-redis 2 s" => {
            let link = if what.contains("clients") { &l.clients } else { &l.redis };
            link.down(true);
            tokio::time::sleep(Duration::from_secs(2)).await;
            link.down(false);
        }
        "reset clients-lb" => l.clients.reset(),
        "reset services-redis" => l.redis.reset(),
        _ => {
            for link in [&l.clients, &l.redis] {
                link.latency(Duration::from_millis(200), Duration::from_millis(50));
            }
        }
    }
}

/// What the recovery after a fault is measured against.
#[derive(Clone)]
pub struct Watch {
    pub records: Vec<Arc<Mutex<Record>>>,
    pub channels: Vec<&'static str>,
    pub acked: SharedAcked,
}

impl Watch {
    /// How long until every client has every event acknowledged now; after 120 s, what is
    /// still missing and at how many clients.
    pub async fn recovered(&self) -> Result<Duration, (u64, usize)> {
        let snapshot = self.acked.lock().unwrap().by_channel.clone();
        let since = Instant::now();
        loop {
            let missing: Vec<u64> = crate::client::missing(&self.records, &self.channels, &snapshot)
                .filter(|m| *m > 0)
                .collect();
            if missing.is_empty() {
                return Ok(since.elapsed());
            }
            if since.elapsed() > Duration::from_secs(120) {
                return Err((missing.iter().sum(), missing.len()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
