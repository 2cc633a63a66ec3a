//! Service processes owned by a test: started on a free loopback port, stopped when dropped.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::Result;

/// A binary of this workspace, next to the test executable's `deps/` folder
/// (`cargo test --workspace` builds every member's binaries before it runs tests).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace` (make test does)",
        path.display()
    );
    path
}

/// A token from a gateway in `AUTH_MODE=dev` (`GET /api/dev/token?<query>`).
pub async fn dev_token(base: &str, query: &str) -> String {
    let v: serde_json::Value = reqwest::get(format!("{base}/api/dev/token?{query}"))
        .await
        .expect("GET /api/dev/token")
        .json()
        .await
        .expect("a JSON answer");
    v["token"].as_str().expect("a dev token").to_owned()
}

/// `GET url`; the answer's text (a `/metrics` page).
pub async fn get_text(url: &str) -> String {
    let answer = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    answer.text().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `GET url` with a bearer token; the answer as JSON.
pub async fn get_json(url: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A service's environment from `(name, value)` pairs.
pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A running service process.
#[derive(Debug)]
pub struct Service {
    child: Option<Child>,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    name: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `bin` with `env` plus `HTTP_ADDR=127.0.0.1:<free port>` and waits until
    /// `GET /healthz` answers 200 (at most 20 s).
    pub fn start(bin: &Path, env: &HashMap<String, String>) -> Result<Service> {
        Self::start_on(bin, env, crate::free_port(false))
    }

    /// Like [`Service::start`] on a given port (to restart a service where clients expect it).
    pub fn start_on(bin: &Path, env: &HashMap<String, String>, port: u16) -> Result<Service> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("service.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .envs(env)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut s = Service {
            child: Some(child),
            port,
            name: bin
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if crate::http_status(port, "/healthz") == Some(200) {
                return Ok(s);
            }
            if let Some(status) = s.try_status() {
                return Err(format!(
                    "{} exited with {status} during start-up:\n{}",
                    s.name,
                    s.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer /healthz within 20 s:\n{}",
                    s.name,
                    s.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the process wrote to stderr (its log).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: no drain, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (Kubernetes' "start a graceful shutdown").
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status() {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not exit within {limit:?}:\n{}",
                    self.name,
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `bin` once per `(variable, value, key)` case with `base` plus that variable, and
/// asserts each stops at start-up with exit code 64 and a message naming `key`.
pub fn assert_bad_config(bin: &Path, base: &[(&str, &str)], cases: &[(&str, &str, &str)]) {
    for (var, value, key) in cases {
        let out = Command::new(bin)
            .envs(base.iter().copied())
            .env(var, value)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}={value}: {err}");
        assert!(err.contains(key), "{var}={value} should name {key}: {err}");
    }
}
