//! Test helpers that own real servers: each starts on a free loopback port with its own data
//! directory and is stopped when dropped, so a failing assertion (a panic) still stops it.
//!
//! # Layout
//! - [`RedisServer`]: one `redis-server`, which can be shut down (`SHUTDOWN SAVE`) and
//!   restarted on the same port and data directory.
//! - [`cluster`]: a Redis Cluster of three masters (with a replica each, for failover tests).
//! - [`sentinel`]: a primary, its replica and a Redis Sentinel watching them (failover tests).
//! - [`bus`]: a bus connected to one of those servers.
//! - [`config`]: a service's configuration from a test's own variables, checked.
//! - [`chunked`]: HTTP/1.1 chunked decoding for the raw-socket SSE clients.
//! - [`bench`]: medians of repeated benchmark runs, printed the same way by every harness.
//! - [`node`]: scripts of tests/node (real npm packages) as child processes, read as JSON lines.
//! - [`process`]: service binaries of the workspace as real processes on free ports.
//! - [`schemas`]: proto-schemas/ in one registry, to validate what the code emits.
//! - [`sse`]: a real SSE client over HTTP (reqwest), parsing the stream as browsers do.
//! - [`faults`]: a fault proxy per link (down, latency with jitter, reset), Toxiproxy's model.
//! - [`free_port`], [`wait_until`]: the small pieces the others use.
//!
//! `redis-server` and `redis-cli` must be on `PATH`; `make test` installs them when missing.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub mod bench;
pub mod bus;
pub mod chunked;
pub mod cluster;
pub mod config;
pub mod faults;
pub mod node;
pub mod process;
pub mod receiver;
pub mod schemas;
pub mod sentinel;
pub mod smtp;
pub mod sse;

/// The workspace's `tests/node/` folder (package.json, lockfile, scripts); panics with what to
/// run if its packages are not installed.
pub fn node_dir() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node");
    assert!(
        dir.join("node_modules").is_dir(),
        "{}/node_modules is missing: run `make test` (it runs npm ci there)",
        dir.display()
    );
    dir
}

/// Errors of the helpers are plain strings that say what to do.
pub type Result<T> = std::result::Result<T, String>;

/// A free TCP port on 127.0.0.1 (and, with `with_bus`, port + 10000 free too, for Cluster).
pub fn free_port(with_bus: bool) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if !with_bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// Polls `cond` every 10 ms until it holds; false if `limit` passes first.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls a plain condition every 10 ms until it holds, and fails the test naming `what` if it
/// does not within `limit`.
pub async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let ok = wait_until(limit, || {
        let v = cond();
        async move { v }
    })
    .await;
    assert!(ok, "{what}: not within {limit:?}");
}

fn need(bin: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!(
            "{bin} is not on PATH: run `make test`, which installs redis-server from Debian's packages"
        ))
    }
}

/// `GET path` on 127.0.0.1:port with a plain HTTP/1.1 request; the status, if it answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends one command in RESP and reads one reply line (enough for PING, SHUTDOWN, CLUSTER INFO).
pub(crate) fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    s.write_all(req.as_bytes())?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if let Some(len) = line.strip_prefix('$') {
        let len: usize = len.trim().parse().unwrap_or(0);
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body)?;
        return Ok(String::from_utf8_lossy(&body).into_owned());
    }
    Ok(line)
}

/// A `redis-server` owned by the test.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a standalone server on a free port with a fresh data directory.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--cluster-enabled", "yes"]`).
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        need("redis-server")?;
        let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let cluster = extra.contains(&"--cluster-enabled");
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = RedisServer {
                child: None,
                port: free_port(cluster),
                dir: tmp.path().to_owned(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                _tmp: None,
            };
            match s.spawn() {
                Ok(()) => {
                    s._tmp = Some(tmp);
                    return Ok(s);
                }
                // Another process may have taken the port between our probe and the bind.
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = command(self.port, &["PING"]) {
                if reply.starts_with("+PONG") {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server exited with {status}: {}",
                    tail.lines().last().unwrap_or("")
                ));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING within 10 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `redis-cli -p <port> <args>` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        need("redis-cli")?;
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!("redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// `SHUTDOWN SAVE`: the server writes its data to disk and exits.
    pub fn shutdown_save(&mut self) -> Result<()> {
        let _ = command(self.port, &["SHUTDOWN", "SAVE"]);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("redis-server did not exit within 10 s of SHUTDOWN SAVE".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err("restart: the server is still running".into());
        }
        self.spawn()
    }

    /// Starts the server again, on the same port and data directory, as a replica of the
    /// server on `primary_port`: an old primary coming back after a failover as its operator
    /// (or the configuration Sentinel rewrote) has it.
    pub fn restart_as_replica_of(&mut self, primary_port: u16) -> Result<()> {
        self.extra.extend([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary_port.to_string(),
        ]);
        self.restart()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9: the server dies with whatever it has not written or replicated
    /// ([`RedisServer::restart`] starts it again on the same port and data directory).
    pub fn crash(&mut self) {
        self.kill();
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
