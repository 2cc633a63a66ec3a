//! One SSE subscriber over raw HTTP/1.1: reads the stream (chunked or not), finds each
//! `data:` line, and records the event's sequence number and latency. Cheap on purpose: the
//! client must not be the bottleneck on a 2-core machine. [`Subscriber::connect_ws`] is the
//! same over the gateway's WebSocket (tokio-tungstenite).

use memchr::memmem::Finder;
use std::{
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, net::TcpStream, task::JoinHandle};

use crate::{hist::Histogram, now_us};

pub struct Result {
    pub received: u64,
    pub unique: u64,
    pub last_at: Option<Instant>,
    /// Times the stream ended early and was resumed with Last-Event-ID (as EventSource does).
    pub reconnects: u64,
}

pub struct Subscriber {
    task: Option<JoinHandle<Result>>,
}

impl Subscriber {
    /// Connects and waits for the response head; then reads in the background until
    /// `expected` distinct events arrived (0: idle, hold the connection until dropped).
    pub async fn connect(port: u16, path: &str, expected: usize, hist: Arc<Histogram>) -> std::io::Result<Subscriber> {
        let (mut sock, chunked, rest) = handshake(port, path, None).await?;
        let path = path.to_owned();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut r = Reader::new(chunked, expected);
            r.feed(&rest, &hist);
            let mut reconnects = 0;
            loop {
                while expected == 0 || (r.unique as usize) < expected {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => r.feed(&buf[..n], &hist),
                    }
                }
                // Ended early (a server that cut a lagging client): resume like EventSource.
                if expected == 0 || r.unique as usize >= expected || r.last_id.is_none() || reconnects >= 100 {
                    break;
                }
                let Ok((s, chunked, rest)) = handshake(port, &path, r.last_id.as_deref()).await else {
                    break;
                };
                reconnects += 1;
                sock = s;
                r.restart(chunked);
                r.feed(&rest, &hist);
            }
            r.result(reconnects)
        });
        Ok(Subscriber { task: Some(task) })
    }

    /// Like [`Subscriber::connect`] over `GET /api/realtime/ws?<query>`: each
    /// `{"op":"message"}` counts as an event; a socket that ends early is resumed from its
    /// last cursor (`last_event_id=`), as the JS client does.
    pub async fn connect_ws(
        port: u16,
        query: &str,
        expected: usize,
        hist: Arc<Histogram>,
    ) -> std::io::Result<Subscriber> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let query = query.to_owned();
        let url = move |last: Option<&str>| {
            let resume = last.map(|c| format!("&last_event_id={c}")).unwrap_or_default();
            format!("ws://127.0.0.1:{port}/api/realtime/ws?{query}{resume}")
        };
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url(None), Some(ws_config()), true)
            .await
            .map_err(std::io::Error::other)?;
        let task = tokio::spawn(async move {
            let mut r = Reader::new(false, expected);
            let mut reconnects = 0;
            loop {
                while expected == 0 || (r.unique as usize) < expected {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(c) = string_after(t.as_bytes(), &CURSOR) {
                                r.last_id = Some(c);
                            }
                            r.event(t.as_bytes(), &hist);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
                if expected == 0 || r.unique as usize >= expected || r.last_id.is_none() || reconnects >= 100 {
                    break;
                }
                let Ok((s, _)) =
                    tokio_tungstenite::connect_async_with_config(url(r.last_id.as_deref()), Some(ws_config()), true)
                        .await
                else {
                    break;
                };
                reconnects += 1;
                ws = s;
            }
            r.result(reconnects)
        });
        Ok(Subscriber { task: Some(task) })
    }

    pub async fn finish(mut self, limit: Duration) -> Result {
        let task = self.task.take().expect("finished once");
        let abort = task.abort_handle();
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(r)) => r,
            _ => {
                abort.abort();
                // Not done by the deadline: everything counts as lost (conservative).
                Result {
                    received: 0,
                    unique: 0,
                    last_at: None,
                    reconnects: 0,
                }
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// The client's socket settings: a small read buffer, since tungstenite zeroes the whole of it
/// for every read (its 128 KiB default made the client, not the server, the bottleneck).
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// Opens the stream (with Last-Event-ID when resuming): the socket, whether the body is
/// chunked, and the body bytes already read.
async fn handshake(port: u16, path: &str, last_id: Option<&str>) -> std::io::Result<(TcpStream, bool, Vec<u8>)> {
    let resume = last_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    testkit::chunked::open_stream(port, path, &resume).await
}

struct Reader {
    chunked: Option<testkit::chunked::Chunked>,
    last_id: Option<String>,
    line: Vec<u8>,
    seen: Vec<u64>,
    received: u64,
    unique: u64,
    last_at: Option<Instant>,
}

impl Reader {
    fn new(chunked: bool, expected: usize) -> Self {
        Reader {
            chunked: chunked.then(Default::default),
            last_id: None,
            line: Vec::with_capacity(512),
            seen: vec![0; expected.div_ceil(64)],
            received: 0,
            unique: 0,
            last_at: None,
        }
    }

    /// What a finished subscriber reports.
    fn result(&self, reconnects: u64) -> Result {
        Result {
            received: self.received,
            unique: self.unique,
            last_at: self.last_at,
            reconnects,
        }
    }

    /// A new connection: fresh framing state, same counts.
    fn restart(&mut self, chunked: bool) {
        self.chunked = chunked.then(Default::default);
        self.line.clear();
    }

    fn feed(&mut self, bytes: &[u8], hist: &Histogram) {
        match self.chunked.take() {
            None => self.body(bytes, hist),
            Some(mut chunked) => {
                chunked.feed(bytes, |b| self.body(b, hist));
                self.chunked = Some(chunked);
            }
        }
    }

    /// Splits `data` into lines (a line may span reads) with a vectorised search, not byte
    /// by byte: the client must stay cheaper than the servers it measures.
    fn body(&mut self, data: &[u8], hist: &Histogram) {
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (part, tail) = rest.split_at(i);
            rest = &tail[1..];
            if self.line.is_empty() {
                self.line_done(part, hist);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(part);
                self.line_done(&line, hist);
                line.clear();
                self.line = line;
            }
        }
        self.line.extend_from_slice(rest);
    }

    fn line_done(&mut self, line: &[u8], hist: &Histogram) {
        if line.starts_with(b"data: ") {
            self.event(line, hist);
        } else if let Some(id) = line.strip_prefix(b"id: ") {
            let id = String::from_utf8_lossy(id);
            match &mut self.last_id {
                Some(last) => {
                    last.clear();
                    last.push_str(&id);
                }
                None => self.last_id = Some(id.into_owned()),
            }
        }
    }

    fn event(&mut self, line: &[u8], hist: &Histogram) {
        let now = now_us();
        let seq = number_after(line, &PAYLOAD_ID);
        let t = number_after(line, &T);
        self.received += 1;
        self.last_at = Some(Instant::now());
        if let Some(t) = t {
            hist.record_us(now.saturating_sub(t));
        }
        if let Some(seq) = seq {
            let (w, bit) = ((seq / 64) as usize, seq % 64);
            if let Some(word) = self.seen.get_mut(w) {
                if *word & (1 << bit) == 0 {
                    *word |= 1 << bit;
                    self.unique += 1;
                }
            }
        }
    }
}

fn string_after(hay: &[u8], needle: &Finder<'_>) -> Option<String> {
    let at = needle.find(hay)? + needle.needle().len();
    let len = hay[at..].iter().position(|b| *b == b'"')?;
    Some(String::from_utf8_lossy(&hay[at..at + len]).into_owned())
}

/// The needles the client looks for, each searcher built once (building one per call, or
/// scanning for a needle's first byte, a quote, cost more than the search).
static PAYLOAD_ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"payload\":{\"id\":\""));
static T: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"t\":"));
static CURSOR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"cursor\":\""));

fn number_after(hay: &[u8], needle: &Finder<'_>) -> Option<u64> {
    let at = needle.find(hay)? + needle.needle().len();
    let digits = hay[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut n: u64 = 0;
    for &d in &hay[at..at + digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (digits > 0).then_some(n)
}
