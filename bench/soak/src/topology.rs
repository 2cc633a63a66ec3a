//! The `make up` topology (`deploy/local/up.sh`): Redis with AOF, two gateways behind nginx,
//! the worker-emitter and the stats-aggregator, on ports of the soak's own, with its state
//! under the soak's folder. What the chaos does to it, and what the sampler reads off it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
};

/// The services, in the order the report lists them.
pub const SERVICES: [&str; 6] = [
    "redis",
    "gateway-1",
    "gateway-2",
    "worker-emitter",
    "stats-aggregator",
    "nginx",
];

pub struct Topology {
    root: PathBuf,
    dir: PathBuf,
    pub nginx: u16,
    pub gateways: [u16; 2],
    pub redis: u16,
    env: Vec<(String, String)>,
}

impl Topology {
    /// The topology on ports `base` (nginx), `base+1`, `base+2` (gateways), `base+3`, `base+4`
    /// (worker, aggregator) and `base+10` (Redis); `gateway_env` goes to the gateways only.
    pub fn new(root: &Path, dir: &Path, base: u16, gateway_env: &[(&str, String)]) -> Self {
        let mut env = vec![
            ("UP_DIR".to_owned(), dir.display().to_string()),
            ("UP_NGINX_PORT".to_owned(), base.to_string()),
            ("UP_GW1_PORT".to_owned(), (base + 1).to_string()),
            ("UP_GW2_PORT".to_owned(), (base + 2).to_string()),
            ("UP_WORKER_PORT".to_owned(), (base + 3).to_string()),
            ("UP_AGG_PORT".to_owned(), (base + 4).to_string()),
            ("UP_REDIS_PORT".to_owned(), (base + 10).to_string()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        for (k, v) in gateway_env {
            env.push((format!("UP_GATEWAY_{k}"), v.clone()));
        }
        Topology {
            root: root.to_owned(),
            dir: dir.to_owned(),
            nginx: base,
            gateways: [base + 1, base + 2],
            redis: base + 10,
            env,
        }
    }

    /// Sets a variable of `up.sh` (`UP_REDIS_URL`: where the services reach Redis).
    pub fn set_env(&mut self, key: &str, value: String) {
        self.env.push((key.to_owned(), value));
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis)
    }

    /// `up.sh <args>`; its output goes to the soak's log. Errors say which command failed.
    pub async fn script(&self, args: &[&str]) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("up.log"))
            .map_err(|e| e.to_string())?;
        let status = Command::new("bash")
            .arg(self.root.join("deploy/local/up.sh"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .await
            .map_err(|e| format!("up.sh {args:?}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "up.sh {args:?} failed ({status}); see {}/up.log",
                self.dir.display()
            ))
        }
    }

    /// The pid of a running service.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join("pids").join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Resident memory of a service, in KiB (nginx: its master and workers).
    pub fn rss_kib(&self, name: &str) -> Option<u64> {
        let pid = self.pid(name)?;
        let mut total = rss_of(pid)?;
        if name == "nginx" {
            for child in children(pid) {
                total += rss_of(child).unwrap_or(0);
            }
        }
        Some(total)
    }

    /// kill -9, then the service is started again.
    pub async fn kill9(&self, name: &str) -> Result<(), String> {
        let pid = self.pid(name).ok_or(format!("{name} is not running"))?;
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status().await;
        for _ in 0..200 {
            if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.script(&["start", name]).await
    }

    /// `SHUTDOWN SAVE`, then Redis is started again on its data (AOF).
    pub async fn redis_shutdown_save(&self) -> Result<(), String> {
        let pid = self.pid("redis").ok_or("redis is not running")?;
        let _ = Command::new("redis-cli")
            .args(["-p", &self.redis.to_string(), "SHUTDOWN", "SAVE"])
            .output()
            .await;
        for _ in 0..1000 {
            if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
                return self.script(&["start", "redis"]).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("redis-server did not exit within 10 s of SHUTDOWN SAVE".into())
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// One plain HTTP GET on loopback (2 s at most): the status and the body.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let fetch = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten()
}

/// The value of a Prometheus sample line that starts with `name` (labels allowed).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
