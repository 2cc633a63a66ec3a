//! The publisher: its own OS thread, runtime and bus, so its pacing is not delayed by the
//! thousands of subscriber tasks of the main runtime (on a loaded machine a publisher that
//! shares their threads lags its schedule, and the lag shows up as the servers' latency).

use std::time::Duration;

use event_bus::{Action, Broker, BusConfig, Channel, EventType, NewEvent, Payload, RedisBus};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::now_us;

/// One scenario's publishing: `messages` events from `t0` (µs since the epoch), at `rate`
/// per second, or as fast as possible (pipelined batches of 1,000) when `rate` is None.
struct Job {
    messages: usize,
    rate: Option<u64>,
    t0: u64,
    done: oneshot::Sender<()>,
}

/// A handle on the publishing thread.
pub struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Publisher {
    /// Starts the thread and its bus on `redis_url`.
    pub fn start(redis_url: String) -> Publisher {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("publisher runtime");
            rt.block_on(async move {
                let bus = RedisBus::connect(BusConfig {
                    redis_url: Some(redis_url),
                    ..Default::default()
                })
                .await
                .expect("bus");
                while let Some(job) = rx.recv().await {
                    run(&bus, job.messages, job.rate, job.t0).await;
                    let _ = job.done.send(());
                }
            });
        });
        Publisher { jobs }
    }

    /// Publishes and returns once every event is stored.
    pub async fn publish(&self, messages: usize, rate: Option<u64>, t0: u64) {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job {
                messages,
                rate,
                t0,
                done,
            })
            .expect("publisher thread runs");
        wait.await.expect("publisher finished the job");
    }
}

fn event(i: usize, t: u64) -> NewEvent {
    NewEvent::new(
        EventType::ORDER_RECEIVED,
        Payload::new(i.to_string(), Action::Created).with_data(json!({"t": t, "marketplace": "ebay", "total": 1})),
    )
}

async fn run(bus: &RedisBus, messages: usize, rate: Option<u64>, t0: u64) {
    match rate {
        Some(r) => {
            let period = 1_000_000 / r;
            for i in 0..messages {
                let at = t0 + i as u64 * period;
                let wait = at.saturating_sub(now_us());
                if wait > 0 {
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                }
                bus.publish(&Channel::ORDERS, event(i, at)).await.expect("publish");
            }
        }
        None => {
            for chunk in (0..messages).collect::<Vec<_>>().chunks(1000) {
                let t = now_us();
                let batch = chunk.iter().map(|i| (Channel::ORDERS, event(*i, t))).collect();
                bus.publish_batch(batch).await.expect("publish");
            }
        }
    }
}
