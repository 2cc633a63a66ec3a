//! Node interop with real processes: three `rakuda-bus tail` processes follow the orders
//! channel; a plain Phase 27 `PUBLISH` from redis-cli (no stream entry, no id) reaches each of
//! them once, with one id, and is stored once.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use testkit::RedisServer;

/// A child process killed when the test ends, pass or fail.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(url: &str, prefix: &str) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rakuda-bus"))
            .args(["tail", "orders"])
            .env("REDIS_URL", url)
            .env("REALTIME_PREFIX", prefix)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rakuda-bus tail");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines }
    }

    fn next_json(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("tail printed nothing within 20 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_processes_store_a_plain_publish_once() {
    let server = RedisServer::start().expect("redis-server");
    let prefix = "interop:rakuda:realtime:";
    let tails: Vec<Tail> = (0..3).map(|_| Tail::start(&server.url(), prefix)).collect();
    let channel = format!("{prefix}orders");
    // Wait until all three listen: PUBLISH before that would (rightly) reach fewer.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.cli(&["PUBSUB", "NUMSUB", &channel]).unwrap();
        if out.lines().nth(1) == Some("3") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tails did not subscribe: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let node_json = r#"{"type":"ORDER_RECEIVED","payload":{"id":"ord_81","action":"created","data":{"marketplace":"ebay","total":129.5}},"timestamp":"2026-11-23T03:00:00.123Z"}"#;
    assert_eq!(server.cli(&["PUBLISH", &channel, node_json]).unwrap(), "3");
    let got: Vec<serde_json::Value> = tails.iter().map(Tail::next_json).collect();
    for e in &got {
        assert_eq!(e["payload"]["id"], "ord_81");
        assert_eq!(e["channel"], "orders");
        assert_eq!(e["id"], got[0]["id"], "the processes saw different ids");
    }
    let stream = format!("{prefix}stream:{{orders}}");
    assert_eq!(server.cli(&["XLEN", &stream]).unwrap(), "1", "stored more than once");
    let stored = server.cli(&["XRANGE", &stream, "-", "+"]).unwrap();
    assert!(stored.contains(got[0]["id"].as_str().unwrap()), "{stored}");

    // Then a bus publish through the CLI: each tail gets it once, right after.
    let out = Command::new(env!("CARGO_BIN_EXE_rakuda-bus"))
        .args([
            "publish",
            "orders",
            "ORDER_RECEIVED",
            "ord_82",
            "created",
            r#"{"marketplace":"amazon","total":5}"#,
        ])
        .env("REDIS_URL", server.url())
        .env("REALTIME_PREFIX", prefix)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    for t in &tails {
        let e = t.next_json();
        assert_eq!(
            (e["id"].as_str(), e["payload"]["id"].as_str()),
            (Some(id.as_str()), Some("ord_82"))
        );
    }
    assert_eq!(server.cli(&["XLEN", &stream]).unwrap(), "2");
}

#[test]
fn cli_rejects_bad_input_with_a_message() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rakuda-bus"))
            .args(args)
            .env_remove("REDIS_URL")
            .output()
            .unwrap()
    };
    let out = run(&["tail", "--from", "garbage!"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cursor"), "{out:?}");
    let out = run(&["publish", "orders", "ORDER_RECEIVED", "x", "exploded"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exploded"), "{out:?}");
    let out = run(&["publish", "nowhere", "ORDER_RECEIVED", "x", "created"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown channel"),
        "{out:?}"
    );
    let out = run(&["head"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<event_bus::Cursor>()
        .is_ok());
}
