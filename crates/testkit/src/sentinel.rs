//! A Redis primary, one replica, and a Redis Sentinel (`redis-server <conf> --sentinel`, the
//! program Debian's `redis-sentinel` runs) that fails the primary over to the replica when it
//! stops answering for `down-after-milliseconds` (1 s here), all on loopback. With
//! [`Failover::start_partitionable`], everyone but the primary itself (its replica, the
//! sentinel, and whoever the sentinel names it to) reaches it through a fault proxy, so it
//! can be cut off alive (a partition) instead of killed.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{command, faults::FaultProxy, free_port, RedisServer, Result};

/// The name the sentinel knows the primary by.
pub const NAME: &str = "rakuda";

/// A primary, its replica and a sentinel, owned by the test.
#[derive(Debug)]
pub struct Failover {
    /// The first primary.
    pub primary: RedisServer,
    /// Its replica: the primary after a failover.
    pub replica: RedisServer,
    /// The primary's network, when it can be cut off ([`Failover::start_partitionable`]).
    pub link: Option<FaultProxy>,
    sentinel: Child,
    sentinel_port: u16,
    _dir: tempfile::TempDir,
}

impl Failover {
    /// Starts the three and waits until the replica is in sync and the sentinel sees both.
    pub fn start() -> Result<Failover> {
        Self::start_with(false)
    }

    /// The same, with the primary reached through [`Failover::link`] by everyone but itself.
    pub fn start_partitionable() -> Result<Failover> {
        Self::start_with(true)
    }

    fn start_with(partitionable: bool) -> Result<Failover> {
        let primary = RedisServer::start()?;
        let link =
            partitionable.then(|| FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], primary.port()))));
        let port = link.as_ref().map_or(primary.port(), FaultProxy::port).to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port])?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let sentinel_port = free_port(false);
        let conf: PathBuf = dir.path().join("sentinel.conf");
        // The sentinel rewrites its configuration file: it must be its own and writable.
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
                 sentinel monitor {NAME} 127.0.0.1 {port} 1\n\
                 sentinel down-after-milliseconds {NAME} 1000\n\
                 sentinel failover-timeout {NAME} 10000\n\
                 sentinel parallel-syncs {NAME} 1\n",
                dir.path().display(),
                dir.path().join("sentinel.log").display()
            ),
        )
        .map_err(|e| format!("write {}: {e}", conf.display()))?;
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server --sentinel: {e}"))?;
        let f = Failover {
            primary,
            replica,
            link,
            sentinel,
            sentinel_port,
            _dir: dir,
        };
        f.wait(
            "the replica in sync and known to the sentinel",
            Duration::from_secs(20),
            |f| {
                let synced = f
                    .replica
                    .cli(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"));
                let known = f
                    .sentinel_cli(&["SENTINEL", "replicas", NAME])
                    .is_ok_and(|r| r.contains(&f.replica.port().to_string()));
                synced && known
            },
        )?;
        Ok(f)
    }

    /// `redis-sentinel://127.0.0.1:<sentinel>/0?sentinelServiceName=rakuda`: what services
    /// are given as `REDIS_URL`.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={NAME}",
            self.sentinel_port
        )
    }

    /// `redis-cli` against the sentinel.
    pub fn sentinel_cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.sentinel_port.to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// The port the sentinel names as the primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let out = self.sentinel_cli(&["SENTINEL", "get-master-addr-by-name", NAME]).ok()?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Waits (bounded) until the sentinel has promoted the replica, and it takes writes.
    pub fn wait_promoted(&self, limit: Duration) -> Result<()> {
        let port = self.replica.port();
        self.wait("the replica promoted", limit, |f| {
            f.primary_port() == Some(port)
                && command(port, &["ROLE"]).is_ok_and(|r| r.starts_with('*'))
                && f.replica.cli(&["ROLE"]).is_ok_and(|r| r.starts_with("master"))
        })
    }

    fn wait(&self, what: &str, limit: Duration, ok: impl Fn(&Failover) -> bool) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            if Instant::now() > deadline {
                return Err(format!("{what}: not within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// SIGSTOP / SIGCONT a process (a replica that stops taking the replication stream).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}
