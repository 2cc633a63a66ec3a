//! One SSE subscriber over raw HTTP/1.1: reads the stream (chunked or not), finds each
//! `data:` line, and records the event's sequence number and latency. Cheap on purpose: the
//! client must not be the bottleneck on a 2-core machine. [`Subscriber::connect_ws`] is the
//! same over the gateway's WebSocket (tokio-tungstenite).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

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
        let (mut ws, _) = tokio_tungstenite::connect_async(url(None))
            .await
            .map_err(std::io::Error::other)?;
        let task = tokio::spawn(async move {
            let mut r = Reader::new(false, expected);
            let mut reconnects = 0;
            loop {
                while expected == 0 || (r.unique as usize) < expected {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(c) = string_after(t.as_bytes(), b"\"cursor\":\"") {
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
                let Ok((s, _)) = tokio_tungstenite::connect_async(url(r.last_id.as_deref())).await else {
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

/// Where the chunked decoder is.
enum Chunk {
    /// Reading the hex size line.
    Size,
    /// This many data bytes left in the chunk.
    Data(usize),
    /// This many bytes of the CRLF after the data left to skip.
    Crlf(usize),
}

/// Sends the request (with Last-Event-ID when resuming) and reads the response head; returns
/// the socket, whether the body is chunked, and the body bytes already read.
async fn handshake(port: u16, path: &str, last_id: Option<&str>) -> std::io::Result<(TcpStream, bool, Vec<u8>)> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await?;
    sock.set_nodelay(true)?;
    let resume = last_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{resume}\r\n");
    sock.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    let body_start = loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response head"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        return Err(std::io::Error::other(format!(
            "not 200: {}",
            text.lines().next().unwrap_or("")
        )));
    }
    let chunked = text.contains("transfer-encoding: chunked");
    Ok((sock, chunked, head[body_start..].to_vec()))
}

struct Reader {
    chunked: bool,
    last_id: Option<String>,
    chunk: Chunk,
    size_line: Vec<u8>,
    line: Vec<u8>,
    seen: Vec<u64>,
    received: u64,
    unique: u64,
    last_at: Option<Instant>,
}

impl Reader {
    fn new(chunked: bool, expected: usize) -> Self {
        Reader {
            chunked,
            last_id: None,
            chunk: Chunk::Size,
            size_line: Vec::new(),
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
        self.chunked = chunked;
        self.chunk = Chunk::Size;
        self.size_line.clear();
        self.line.clear();
    }

    fn feed(&mut self, mut bytes: &[u8], hist: &Histogram) {
        if !self.chunked {
            self.body(bytes, hist);
            return;
        }
        while !bytes.is_empty() {
            match self.chunk {
                Chunk::Crlf(left) => {
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    self.chunk = if left == take {
                        Chunk::Size
                    } else {
                        Chunk::Crlf(left - take)
                    };
                }
                Chunk::Data(left) => {
                    let take = left.min(bytes.len());
                    let (data, rest) = bytes.split_at(take);
                    self.body(data, hist);
                    self.chunk = if left == take {
                        Chunk::Crlf(2)
                    } else {
                        Chunk::Data(left - take)
                    };
                    bytes = rest;
                }
                Chunk::Size => {
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        self.size_line.extend_from_slice(bytes);
                        return;
                    };
                    self.size_line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let text = String::from_utf8_lossy(&self.size_line).trim().to_owned();
                    self.size_line.clear();
                    let size = usize::from_str_radix(text.split(';').next().unwrap_or(""), 16).unwrap_or(0);
                    if size > 0 {
                        self.chunk = Chunk::Data(size);
                    }
                }
            }
        }
    }

    fn body(&mut self, data: &[u8], hist: &Histogram) {
        for &b in data {
            if b == b'\n' {
                if self.line.starts_with(b"data: ") {
                    let line = std::mem::take(&mut self.line);
                    self.event(&line, hist);
                    self.line = line;
                } else if let Some(id) = self.line.strip_prefix(b"id: ") {
                    self.last_id = Some(String::from_utf8_lossy(id).into_owned());
                }
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
    }

    fn event(&mut self, line: &[u8], hist: &Histogram) {
        let now = now_us();
        let seq = number_after(line, b"\"payload\":{\"id\":\"");
        let t = number_after(line, b"\"t\":");
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

fn string_after(hay: &[u8], needle: &[u8]) -> Option<String> {
    let at = hay.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let len = hay[at..].iter().position(|b| *b == b'"')?;
    Some(String::from_utf8_lossy(&hay[at..at + len]).into_owned())
}

fn number_after(hay: &[u8], needle: &[u8]) -> Option<u64> {
    let at = hay.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let digits: Vec<u8> = hay[at..].iter().take_while(|b| b.is_ascii_digit()).copied().collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
