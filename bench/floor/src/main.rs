//! The floor: the least a Redis-to-SSE fan-out server can do. One Redis subscription; every
//! message written to every open socket, several pending messages in one write. No resume, no
//! filters, no limits, no metrics: what the gateway is measured against (`make bench`).
//!
//! `HTTP_ADDR=127.0.0.1:9000 REDIS_URL=redis://127.0.0.1:6379 bench-floor`

use bytes::{Bytes, BytesMut};
use fred::prelude::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::broadcast,
};

const CHANNEL: &str = "rakuda:realtime:orders";
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n: ok\n\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:9000".into());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Big enough that a burst does not lag a reader that keeps up.
    let (tx, _) = broadcast::channel::<Bytes>(1 << 16);

    let sub = Builder::from_config(Config::from_url(&url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    let mut messages = sub.message_rx();
    sub.subscribe(CHANNEL).await?;
    let fan = tx.clone();
    tokio::spawn(async move {
        while let Ok(m) = messages.recv().await {
            if let Some(data) = m.value.as_bytes() {
                let mut frame = BytesMut::with_capacity(data.len() + 8);
                frame.extend_from_slice(b"data: ");
                frame.extend_from_slice(data);
                frame.extend_from_slice(b"\n\n");
                let _ = fan.send(frame.freeze());
            }
        }
    });

    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut rx = tx.subscribe();
        tokio::spawn(async move {
            // Read the request head; its content does not matter.
            let mut req = [0u8; 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut req).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&req[..n]),
                }
            }
            if sock.write_all(HEAD).await.is_err() {
                return;
            }
            let mut buf = BytesMut::new();
            loop {
                match rx.recv().await {
                    Ok(first) => buf.extend_from_slice(&first),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(&more);
                }
                if sock.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
            }
        });
    }
}
