//! A Server-Sent Events client for tests: connects with reqwest and parses the stream the way
//! the HTML standard's EventSource does (fields, comments, `retry:`, blank-line dispatch).

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// One dispatched message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The `id:` field (the resume cursor), if the message had one.
    pub id: Option<String>,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// What the stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A message.
    Message(Message),
    /// A comment line (`: text`), without the colon and one space.
    Comment(String),
    /// A `retry:` field, in ms.
    Retry(u64),
}

/// An open stream.
pub struct SseStream {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
    pending: std::collections::VecDeque<Item>,
    current: Message,
    has_data: bool,
    /// The last `id:` seen, as EventSource keeps it for `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    ended: bool,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("status", &self.status)
            .field("last_event_id", &self.last_event_id)
            .finish()
    }
}

impl SseStream {
    /// `GET url` with `Accept: text/event-stream` and, if given, `Last-Event-ID`.
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> reqwest::Result<SseStream> {
        let client = reqwest::Client::builder().build()?;
        let mut req = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await?;
        Ok(SseStream {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            pending: Default::default(),
            current: Message::default(),
            has_data: false,
            last_event_id: last_event_id.map(str::to_owned),
            ended: false,
        })
    }

    /// The next item, or `None` when the stream ended; panics after `limit` without one.
    pub async fn next_item(&mut self, limit: Duration) -> Option<Item> {
        tokio::time::timeout(limit, self.next_item_inner())
            .await
            .unwrap_or_else(|_| panic!("no SSE item within {limit:?}"))
    }

    async fn next_item_inner(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.buf.push_str(&String::from_utf8_lossy(&chunk));
                    self.parse();
                }
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// The next message, skipping comments and `retry:`; `None` when the stream ended.
    pub async fn next_message(&mut self, limit: Duration) -> Option<Message> {
        loop {
            match self.next_item(limit).await? {
                Item::Message(m) => return Some(m),
                _ => continue,
            }
        }
    }

    fn parse(&mut self) {
        while let Some(pos) = self.buf.find('\n') {
            let mut line: String = self.buf.drain(..=pos).collect();
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
            if line.is_empty() {
                if self.has_data {
                    let mut m = std::mem::take(&mut self.current);
                    if m.data.ends_with('\n') {
                        m.data.pop();
                    }
                    if m.id.is_some() {
                        self.last_event_id = m.id.clone();
                    }
                    self.pending.push_back(Item::Message(m));
                }
                self.current = Message::default();
                self.has_data = false;
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                self.pending
                    .push_back(Item::Comment(comment.strip_prefix(' ').unwrap_or(comment).to_owned()));
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "data" => {
                    self.current.data.push_str(&value);
                    self.current.data.push('\n');
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value),
                "event" => self.current.event = Some(value),
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        self.pending.push_back(Item::Retry(ms));
                    }
                }
                _ => {}
            }
        }
    }
}

/// A client that behaves like EventSource behind a load balancer: it reads `path` (e.g.
/// `/api/realtime/events?channels=orders`) from `bases[at]`, and when its stream ends or fails
/// it reconnects with Last-Event-ID to the next base that answers (one base: the same one, a
/// proxy picking the instance). Collects payload ids (grouped messages contribute each of
/// theirs) until it has `want`; returns them and how many times it reconnected. `ready` is
/// set once the first stream is open. Panics after 90 s.
pub async fn follow(
    bases: &[String],
    mut at: usize,
    path: &str,
    want: usize,
    ready: Option<tokio::sync::watch::Sender<bool>>,
) -> (Vec<String>, usize) {
    const QUIET: Duration = Duration::from_secs(30);
    let mut got = Vec::with_capacity(want);
    let mut last: Option<String> = None;
    let mut reconnects = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while got.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client gave up with {} of {want} events",
            got.len()
        );
        let url = format!("{}{path}", bases[at]);
        let mut s = match SseStream::connect(&url, last.as_deref()).await {
            Ok(s) if s.status == 200 => s,
            _ => {
                at = (at + 1) % bases.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if let Some(r) = &ready {
            let _ = r.send(true);
        }
        while let Some(m) = tokio::time::timeout(QUIET, s.next_message(QUIET)).await.ok().flatten() {
            let v: serde_json::Value = serde_json::from_str(&m.data).expect("JSON data");
            match v.get("payloads") {
                Some(payloads) => got.extend(
                    payloads
                        .as_array()
                        .expect("payloads")
                        .iter()
                        .map(|p| p["id"].as_str().expect("payload id").to_owned()),
                ),
                None => got.push(v["payload"]["id"].as_str().expect("payload id").to_owned()),
            }
            last = m.id;
            if got.len() >= want {
                break;
            }
        }
        if got.len() < want {
            reconnects += 1;
            at = (at + 1) % bases.len();
        }
    }
    (got, reconnects)
}
