//! The floor: the least a Redis-to-SSE fan-out server can do, and as fast as this machine
//! lets one go. One Redis subscription into one broadcast ring; each socket subscribed before
//! its head is sent, and every pending message written in one write (up to 64 KiB). No resume,
//! no filters, no limits, no metrics: what the gateway is measured against (`make bench`).
//!
//! One worker thread by default (`FLOOR_THREADS`): on a loaded machine a fan-out server is
//! fastest when its wakes stay on one thread; checked against an outside trivial server with
//! an outside load generator (the note of the issue that made this the floor).
//!
//! `HTTP_ADDR=127.0.0.1:9000 REDIS_URL=redis://127.0.0.1:6379 bench-floor`

use std::sync::Arc;

use fred::prelude::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::broadcast::{self, error::RecvError, error::TryRecvError},
};

/// The shard channel the bus announces each stored event of `orders` on (`SPUBLISH`; a classic
/// `PUBLISH` only with `bus.announce_plain`).
const CHANNEL: &str = "rakuda:realtime:live:{orders}";
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n: ok\n\n";
/// Most bytes gathered into one write.
const WRITE_MAX: usize = 64 * 1024;

type Frame = Arc<[u8]>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = std::env::var("FLOOR_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:9000".into());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Big enough that a burst does not lag a reader that keeps up.
    let (tx, _) = broadcast::channel::<Frame>(1 << 16);

    let sub = Builder::from_config(Config::from_url(&url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    let mut messages = sub.message_rx();
    sub.ssubscribe(CHANNEL).await?;
    let fan = tx.clone();
    tokio::spawn(async move {
        while let Ok(m) = messages.recv().await {
            if let Some(data) = m.value.as_bytes() {
                let mut frame = Vec::with_capacity(data.len() + 8);
                frame.extend_from_slice(b"data: ");
                frame.extend_from_slice(data);
                frame.extend_from_slice(b"\n\n");
                let _ = fan.send(frame.into());
            }
        }
    });

    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(serve(sock, tx.clone()));
    }
}

async fn serve(mut sock: TcpStream, tx: broadcast::Sender<Frame>) {
    // Read the request head; its content does not matter.
    let mut req = [0u8; 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut req).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&req[..n]),
        }
    }
    // Subscribed before the head: a client that has the head gets every later message.
    let mut rx = tx.subscribe();
    if sock.write_all(HEAD).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = sock.split();
    let mut out = Vec::with_capacity(16 * 1024);
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            first = rx.recv() => {
                out.clear();
                match first {
                    Ok(f) => out.extend_from_slice(&f),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                while out.len() < WRITE_MAX {
                    match rx.try_recv() {
                        Ok(f) => out.extend_from_slice(&f),
                        Err(TryRecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
                if !out.is_empty() && wr.write_all(&out).await.is_err() {
                    return;
                }
            }
            // A client that leaves is noticed at once.
            r = rd.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { return },
        }
    }
}
