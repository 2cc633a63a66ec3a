//! An HTTP/1.1 server of a test's own on loopback, standing in for an outside API (an OTLP
//! collector, Slack, Discord, LINE, a webhook endpoint): it records every request and answers
//! what the test's function says, including failures. At most 256 connections, each read with a
//! deadline; it lives as long as the test process.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `POST`, ...
    pub method: String,
    /// The path and query.
    pub target: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When it was read.
    pub at: Instant,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// What to answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, headers and a body.
    Status(u16, Vec<(String, String)>, String),
    /// Close the connection without answering (a lost answer).
    Drop,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(body: &str) -> Reply {
        Reply::Status(
            200,
            vec![("content-type".into(), "application/json".into())],
            body.into(),
        )
    }
}

type Answer = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("port", &self.port).finish()
    }
}

impl Receiver {
    /// Starts one; `answer(request, n)` says what to reply to the `n`th request (from 0).
    pub fn start(answer: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = requests.clone();
        let port = accept(move |conn| serve(conn, &store, &answer));
        Receiver { port, requests }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

/// A loopback port whose connections (at most 256, for the process' life) are each served by
/// `serve` on a thread of their own.
pub(crate) fn accept(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for conn in listener.incoming().take(256).flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(conn));
        }
    });
    port
}

fn serve(conn: std::net::TcpStream, store: &Mutex<Vec<Received>>, answer: &Answer) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    // One write per answer, sent at once: with Nagle's algorithm a client's delayed ACK would
    // hold every answer ~40 ms.
    let _ = conn.set_nodelay(true);
    let Ok(read) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length.min(16 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Received {
            method,
            target,
            headers,
            body,
            at: Instant::now(),
        };
        let n = {
            let mut all = store.lock().unwrap();
            all.push(request.clone());
            all.len() - 1
        };
        match answer(&request, n) {
            Reply::Drop => return,
            Reply::Status(status, headers, body) => {
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(&body);
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
