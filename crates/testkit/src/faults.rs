//! A fault proxy on loopback, in Toxiproxy's model: one proxy per link (clients to a gateway, a
//! gateway to Redis, a replica to its master), and faults set on it while traffic flows:
//!
//! - `down`: nothing passes either way, as when a link is cut. The bytes in flight wait (in
//!   the proxy and in the kernel's buffers, as a network's retransmissions would) and flow on,
//!   in order, when it is up again; a connection opened meanwhile is accepted but reaches its
//!   upstream only then.
//! - `latency` with `jitter`: each chunk from the upstream is held `latency ± jitter` (order
//!   kept, throughput not: chunks are pipelined). Downstream only, as Toxiproxy's latency
//!   toxic by default: a round trip through the link takes `latency` longer.
//! - `reset`: every connection through it is closed at once with a TCP reset, both ways.
//!
//! Not noxious (Toxiproxy's Rust port): its only way to stop traffic without closing the
//! connection, a `timeout` toxic of 0, discards the bytes it holds, which no network does to a
//! TCP stream (Redis's protocol or an SSE stream would be corrupted, not interrupted). Toxiproxy
//! itself is a Go program, and no Go toolchain is installed on these machines.
//!
//! Each proxy runs on a thread of its own (a single-threaded runtime), so a test's runtime,
//! blocked or busy, does not slow the link down. Bounded: at most [`MAX_CONNECTIONS`] at once
//! (more are refused), 64 chunks of 32 KiB in flight per direction.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::{mpsc, watch},
    time::Instant,
};

/// Connections a proxy carries at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// What a link does now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Nothing passes.
    pub down: bool,
    /// Each chunk is held this long...
    pub latency: Duration,
    /// ... plus or minus up to this.
    pub jitter: Duration,
    /// Bumped by [`FaultProxy::reset`]: connections of an older generation are reset.
    pub resets: u64,
}

/// One link's proxy: `127.0.0.1:<port>` to its upstream. Stopped (every connection closed) when
/// dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    open: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream`, up and without faults.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local address");
        let (faults, watching) = watch::channel(Faults::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let open = Arc::new(AtomicUsize::new(0));
        let counted = open.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    tokio::select! {
                        _ = accept(listener, upstream, watching, counted) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("a thread");
        FaultProxy {
            addr,
            faults,
            open,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts the link (`true`) or heals it.
    pub fn down(&self, down: bool) {
        self.faults.send_modify(|f| f.down = down);
    }

    /// Holds each chunk from the upstream `latency ± jitter` from now on.
    pub fn latency(&self, latency: Duration, jitter: Duration) {
        self.faults.send_modify(|f| {
            f.latency = latency;
            f.jitter = jitter.min(latency);
        });
    }

    /// Resets every connection open now.
    pub fn reset(&self) {
        self.faults.send_modify(|f| f.resets += 1);
    }

    /// What the link does now.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// Connections open through it now.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, faults: watch::Receiver<Faults>, open: Arc<AtomicUsize>) {
    while let Ok((client, _)) = listener.accept().await {
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (faults, open) = (faults.clone(), open.clone());
        tokio::spawn(async move {
            link(client, upstream, faults).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One connection, until either side closes it or a reset.
async fn link(client: TcpStream, upstream: SocketAddr, mut faults: watch::Receiver<Faults>) {
    let generation = faults.borrow().resets;
    // A link that is down carries no handshake either: the upstream is reached once it is up.
    let up = faults
        .wait_for(|f| !f.down || f.resets != generation)
        .await
        .map(|f| f.resets);
    if up.map_or(true, |r| r != generation) {
        return reset(client);
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return reset(client);
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // A jitter sequence of each connection's own (the wall clock's nanoseconds).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(upstream.port()) << 32 ^ u64::from(nanos);
    let to_server = pump(client_read, server_write, faults.clone(), generation, None);
    let to_client = pump(server_read, client_write, faults.clone(), generation, Some(seed));
    // A reset: both sockets are closed with RST.
    if let (Some((client_read, server_write)), Some((server_read, client_write))) = tokio::join!(to_server, to_client) {
        for (r, w) in [(client_read, client_write), (server_read, server_write)] {
            if let Ok(s) = r.reunite(w) {
                reset(s);
            }
        }
    }
}

/// Closes `s` with a TCP reset (SO_LINGER 0: the close does not wait, so it never blocks).
fn reset(s: TcpStream) {
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

/// One direction: read, hold (latency when `delayed` gives its jitter's seed; down), write, in
/// order. `Some` (its halves, to be reset) when the link was reset, `None` when the stream
/// ended.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    generation: u64,
    delayed: Option<u64>,
) -> Option<(OwnedReadHalf, OwnedWriteHalf)> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut write_faults = faults.clone();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = write_faults.wait_for(|f| f.resets != generation) => return Err(to),
            }
            // Held while the link is down.
            match write_faults.wait_for(|f| !f.down || f.resets != generation).await {
                Ok(f) if f.resets == generation => {}
                _ => return Err(to),
            }
            tokio::select! {
                r = to.write_all(&chunk) => if r.is_err() { return Ok(()) },
                _ = write_faults.wait_for(|f| f.resets != generation) => return Err(to),
            }
        }
        let _ = to.shutdown().await;
        Ok(())
    };
    let reader = async move {
        let mut rng = delayed.unwrap_or(0) | 1;
        let mut last_due = Instant::now();
        loop {
            match faults.wait_for(|f| !f.down || f.resets != generation).await {
                Ok(f) if f.resets == generation => {}
                _ => return Err(from),
            }
            let mut buf = vec![0u8; 32 * 1024];
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => n,
                },
                // Re-checked: a fault set while waiting for bytes holds the next ones.
                _ = faults.changed() => continue,
            };
            buf.truncate(n);
            let mut f = *faults.borrow();
            if delayed.is_none() {
                f.latency = Duration::ZERO;
                f.jitter = Duration::ZERO;
            }
            let mut due = Instant::now() + f.latency;
            if !f.jitter.is_zero() {
                // xorshift: no dependency, and a jitter needs no more.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let span = f.jitter.as_micros() as u64 * 2;
                let offset = Duration::from_micros(rng % (span + 1));
                due = (due + offset).checked_sub(f.jitter).unwrap_or(due);
            }
            // Order is kept: a chunk never overtakes the one before.
            due = due.max(last_due);
            last_due = due;
            if tx.send((due, buf)).await.is_err() {
                return Ok(());
            }
        }
    };
    match tokio::join!(reader, writer) {
        (Err(r), Err(w)) => Some((r, w)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn read_some(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn down_holds_the_bytes_and_up_delivers_them_in_order() {
        let proxy = FaultProxy::start(echo().await);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"a").await.unwrap();
        assert_eq!(
            read_some(&mut s, Duration::from_secs(5)).await.as_deref(),
            Some(&b"a"[..])
        );
        proxy.down(true);
        s.write_all(b"bc").await.unwrap();
        assert_eq!(
            read_some(&mut s, Duration::from_millis(300)).await,
            None,
            "bytes passed a cut link"
        );
        proxy.down(false);
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(
                read_some(&mut s, Duration::from_secs(5))
                    .await
                    .expect("held bytes never came"),
            );
        }
        assert_eq!(got, b"bc");
    }

    #[tokio::test]
    async fn latency_holds_each_chunk_and_reset_closes_every_connection() {
        let proxy = FaultProxy::start(echo().await);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.latency(Duration::from_millis(100), Duration::from_millis(20));
        let at = Instant::now();
        s.write_all(b"x").await.unwrap();
        assert!(read_some(&mut s, Duration::from_secs(5)).await.is_some());
        // The round trip: at least the latency less its jitter (held downstream only).
        assert!(at.elapsed() >= Duration::from_millis(80), "{:?}", at.elapsed());
        assert_eq!(proxy.connections(), 1);
        proxy.reset();
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("not closed");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
}
