//! Node scripts of `tests/node/` as child processes: each prints JSON lines, read here as they
//! come; killed when dropped.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

/// Copies `scripts` into a new directory next to a link to `tests/node/node_modules`, as a
/// user's `npm install` lays out a project of their own (Node resolves packages from the
/// script's own directory, not from the working directory). [`NodeScript::start`] runs them
/// by their absolute path.
pub fn stage(scripts: &[std::path::PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for script in scripts {
        let name = script.file_name().expect("a script file");
        std::fs::copy(script, dir.path().join(name)).unwrap_or_else(|e| panic!("copy {}: {e}", script.display()));
    }
    std::os::unix::fs::symlink(crate::node_dir().join("node_modules"), dir.path().join("node_modules"))
        .expect("link node_modules");
    dir
}

/// A running `node tests/node/<script> ...`.
#[derive(Debug)]
pub struct NodeScript {
    child: Child,
    lines: mpsc::Receiver<Value>,
    name: String,
}

impl NodeScript {
    /// Starts `script` with `args` and extra environment `env`.
    pub fn start(script: &str, args: &[&str], env: &[(&str, String)]) -> NodeScript {
        let dir = crate::node_dir();
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node is needed: make test installs it");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        NodeScript {
            child,
            lines,
            name: format!("{script} {}", args.join(" ")),
        }
    }

    /// The next JSON line, waiting at most `limit`; `None` when the script ended or went silent.
    pub fn next(&self, limit: Duration) -> Option<Value> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Writes one line to the script's stdin (for scripts that wait for the test's go-ahead).
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .expect("write to node");
    }

    /// Waits for the script to end (at most `limit`) and returns its last JSON line; panics with
    /// its stderr when it failed or took too long.
    pub fn finish(self, limit: Duration) -> Value {
        self.try_finish(limit).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`NodeScript::finish`] that returns what went wrong (the script's stderr) instead of
    /// panicking, so the caller can add what it knows (a service's log).
    pub fn try_finish(mut self, limit: Duration) -> Result<Value, String> {
        let deadline = std::time::Instant::now() + limit;
        let mut last = None;
        loop {
            while let Ok(v) = self.lines.try_recv() {
                last = Some(v);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Lines printed just before the exit.
                while let Ok(v) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    last = Some(v);
                }
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                if !status.success() {
                    return Err(format!("node {} failed ({status}):\n{err}", self.name));
                }
                return last.ok_or_else(|| format!("node {} printed no JSON", self.name));
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("node {} did not finish within {limit:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
