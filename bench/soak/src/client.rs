//! One resuming SSE client, as the dashboard's page is: it holds a stream through the load
//! balancer, resumes with `Last-Event-ID` whenever the stream ends (after the server's
//! `retry:`, as EventSource waits), backs off 1 s to 15 s when an open fails (as the JS client
//! does), and now and then reconnects of its own accord (a page reload: `churn`).
//!
//! It records which events it got (by sequence number, per channel: see [`crate::load`]),
//! duplicates, RESYNCs, and how long it held a stream. Latency goes to the shared window.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{io::AsyncReadExt, net::TcpStream, sync::watch};

use crate::{
    hist::Histogram,
    load::{now_ms, seq_and_time, Bits},
};

/// A read that sees nothing for this long (heartbeats come every 30 s) gives the stream up.
const IDLE: Duration = Duration::from_secs(75);
/// Connecting and reading the response head.
const OPEN: Duration = Duration::from_secs(10);

/// What one client saw.
#[derive(Default)]
pub struct Record {
    pub seen: Bits,
    pub received: u64,
    pub duplicates: u64,
    pub resyncs: u64,
    /// Streams ended by the server or the network.
    pub reconnects: u64,
    /// Reconnects of its own accord.
    pub churns: u64,
    /// Opens that failed (refused, not 200, timed out).
    pub failures: u64,
    pub connected: Duration,
    pub since: Option<Instant>,
    pub first: Option<Instant>,
    /// When the last stream ended (while it is not replaced).
    pub down_since: Option<Instant>,
    /// The longest time without a stream, and when it began.
    pub longest_gap: Duration,
    pub longest_gap_at: Option<Instant>,
    pub last_id: Option<String>,
}

impl Record {
    /// Time held connected up to `now`, and the time since the first open.
    pub fn uptime(&self, now: Instant) -> (Duration, Duration) {
        let open = self.since.map(|s| now - s).unwrap_or_default();
        (self.connected + open, self.first.map(|f| now - f).unwrap_or_default())
    }
}

/// How many events of `acked` (by channel) each client has not received, in client order.
pub fn missing<'a>(
    records: &'a [Arc<Mutex<Record>>],
    channels: &'a [&'static str],
    acked: &'a std::collections::HashMap<&'static str, Bits>,
) -> impl Iterator<Item = u64> + 'a {
    records
        .iter()
        .zip(channels)
        .map(|(r, ch)| acked.get(ch).map_or(0, |a| a.missing_from(&r.lock().unwrap().seen)))
}

/// What every client shares.
pub struct Shared {
    pub port: u16,
    pub latency: Histogram,
    pub connected: AtomicUsize,
    pub stop: watch::Receiver<bool>,
    pub churn_secs: f64,
}

/// Runs one client until `stop`.
pub async fn run(shared: Arc<Shared>, channel: &'static str, token: String, rec: Arc<Mutex<Record>>, seed: u64) {
    let path = format!("/api/realtime/events?channels={channel}&notifications=false");
    let mut stop = shared.stop.clone();
    let mut rng = seed | 1;
    let mut backoff = Duration::from_secs(1);
    let mut retry = Duration::from_millis(3000);
    while !*stop.borrow() {
        let last = rec.lock().unwrap().last_id.clone();
        let opened = tokio::time::timeout(OPEN, open(shared.port, &path, &token, last.as_deref())).await;
        let Ok(Ok((mut sock, chunked, rest))) = opened else {
            rec.lock().unwrap().failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(15));
            continue;
        };
        backoff = Duration::from_secs(1);
        {
            let mut r = rec.lock().unwrap();
            let now = Instant::now();
            r.since = Some(now);
            r.first.get_or_insert(now);
            if let Some(down) = r.down_since.take() {
                if now - down > r.longest_gap {
                    r.longest_gap = now - down;
                    r.longest_gap_at = Some(down);
                }
            }
        }
        shared.connected.fetch_add(1, Relaxed);
        let mut reader = Reader::new(chunked);
        let mut ended = reader.feed(&rest, &shared, &rec, &mut retry);
        // A page reload after an exponential time (mean `churn_secs`).
        let churn_after = Duration::from_secs_f64(-shared.churn_secs * (1.0 - unit(&mut rng)).ln());
        let churn = tokio::time::sleep(churn_after);
        tokio::pin!(churn);
        let mut buf = vec![0u8; 16 * 1024];
        let churned = loop {
            if ended {
                break false;
            }
            tokio::select! {
                _ = stop.changed() => break false,
                _ = &mut churn => break true,
                read = tokio::time::timeout(IDLE, sock.read(&mut buf)) => match read {
                    Ok(Ok(n)) if n > 0 => ended = reader.feed(&buf[..n], &shared, &rec, &mut retry),
                    _ => break false,
                },
            }
        };
        shared.connected.fetch_sub(1, Relaxed);
        let ended_by_stop = *stop.borrow();
        {
            let mut r = rec.lock().unwrap();
            if let Some(s) = r.since.take() {
                r.connected += s.elapsed();
            }
            r.down_since = Some(Instant::now());
            if churned {
                r.churns += 1;
            } else if !ended_by_stop {
                r.reconnects += 1;
            }
        }
        if !churned && !ended_by_stop {
            // The server's retry: (EventSource waits it before reconnecting).
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.changed() => break,
            }
        }
    }
}

/// A uniform number in [0, 1) (xorshift: each client its own sequence).
fn unit(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// Opens the stream with the token, resuming from `last` when given.
async fn open(port: u16, path: &str, token: &str, last: Option<&str>) -> std::io::Result<(TcpStream, bool, Vec<u8>)> {
    let resume = last.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    testkit::chunked::open_stream(port, path, &format!("Authorization: Bearer {token}\r\n{resume}")).await
}

/// The SSE reader of one connection (chunked or not). As EventSource, an event's fields take
/// effect when the blank line that ends it arrives: a stream cut between its `id:` and the end
/// of its `data:` must not move the resume position past an event never received.
struct Reader {
    chunked: Option<testkit::chunked::Chunked>,
    line: Vec<u8>,
    id: Option<String>,
    data: Vec<u8>,
}

impl Reader {
    fn new(chunked: bool) -> Self {
        Reader {
            chunked: chunked.then(Default::default),
            line: Vec::with_capacity(1024),
            id: None,
            data: Vec::new(),
        }
    }

    /// Reads what arrived; true once the response has ended (a proxy ends a chunked response
    /// with an empty chunk and keeps the connection for the next request: the stream is over).
    fn feed(&mut self, bytes: &[u8], shared: &Shared, rec: &Mutex<Record>, retry: &mut Duration) -> bool {
        let Some(mut chunked) = self.chunked.take() else {
            self.body(bytes, shared, rec, retry);
            return false;
        };
        let ended = chunked.feed(bytes, |b| self.body(b, shared, rec, retry));
        self.chunked = Some(chunked);
        ended
    }

    fn body(&mut self, data: &[u8], shared: &Shared, rec: &Mutex<Record>, retry: &mut Duration) {
        for &b in data {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.is_empty() || self.line == b"\r" {
                // The event is complete: dispatched, and only now its id is the position.
                if !self.data.is_empty() {
                    message(&self.data, shared, rec);
                    self.data.clear();
                }
                if let Some(id) = self.id.take() {
                    rec.lock().unwrap().last_id = Some(id);
                }
            } else if let Some(json) = self.line.strip_prefix(b"data: ") {
                self.data.extend_from_slice(json);
            } else if let Some(id) = self.line.strip_prefix(b"id: ") {
                self.id = Some(String::from_utf8_lossy(id).into_owned());
            } else if let Some(ms) = self.line.strip_prefix(b"retry: ") {
                if let Some(ms) = std::str::from_utf8(ms).ok().and_then(|s| s.trim().parse().ok()) {
                    *retry = Duration::from_millis(ms);
                }
            }
            self.line.clear();
        }
    }
}

/// One `data:` line: an event, a group of them, or a RESYNC.
fn message(json: &[u8], shared: &Shared, rec: &Mutex<Record>) {
    let Ok(v) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let now = now_ms();
    let mut r = rec.lock().unwrap();
    if v["type"] == "RESYNC" {
        r.resyncs += 1;
        return;
    }
    let one = [v["payload"].clone()];
    let payloads = match v["payloads"].as_array() {
        Some(group) => group.as_slice(),
        None => &one[..],
    };
    for p in payloads {
        let Some((seq, sent)) = seq_and_time(p) else { continue };
        r.received += 1;
        if !r.seen.insert(seq) {
            r.duplicates += 1;
        }
        shared.latency.record_ms(now.saturating_sub(sent));
    }
}
