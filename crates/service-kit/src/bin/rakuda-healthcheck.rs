//! `rakuda-healthcheck [path]`: exits 0 when `GET <path>` (default `/healthz`) on this
//! container's own `HTTP_ADDR` port answers 200 within 2 s. For the image's `HEALTHCHECK`, so
//! the runtime image needs no curl.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/healthz".into());
    let addr = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let port = addr
        .parse::<SocketAddr>()
        .map(|a| a.port())
        .unwrap_or_else(|_| addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(8080));
    let ok = (|| -> std::io::Result<bool> {
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 16];
        let n = s.read(&mut head)?;
        Ok(head[..n].starts_with(b"HTTP/1.1 200"))
    })();
    match ok {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("{path} on port {port} did not answer 200");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{path} on port {port}: {e}");
            std::process::exit(1);
        }
    }
}
