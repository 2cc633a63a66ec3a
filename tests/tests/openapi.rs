//! The OpenAPI document (`GET /api/openapi.json`) is true: it names exactly the router's
//! endpoints and the reference's, and `schemathesis` (PyPI), run against a live gateway on a real
//! redis-server with a bounded number of examples and a fixed seed, finds no 5xx, no answer
//! outside the document (status, content type, headers, body schema, SSE events) and no request
//! the document calls invalid that the gateway takes. Its per-operation exceptions, with reasons:
//! `tests/schemathesis/schemathesis.toml`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{
    process::{env, workspace_bin, Service},
    RedisServer,
};

/// schemathesis's own examples per operation: enough to cover every documented code, bounded
/// so the run stays about a minute on 2 cores.
const MAX_EXAMPLES: &str = "20";
/// A fixed seed: the same cases on every run, so a failure is reproducible and never a fluke.
const SEED: &str = "1";
/// The whole run's limit (it takes about a minute).
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `(METHOD, path)` of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// `(METHOD, path)` the router serves, read from its source: every `.route("<path>", get(..)
/// .post(..))` of `routes.rs`, and the dashboard's files.
fn routed() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(root().join("crates/sse-gateway/src/routes.rs")).unwrap();
    let mut out = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("a route's path");
        // The handler expression ends at the route call's closing parenthesis.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, c)| {
                depth += i32::from(c == '(') - i32::from(c == ')');
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("the route call ends");
        for method in ["get", "post", "put", "delete", "patch"] {
            let handler = &chunk[..end];
            if handler.contains(&format!("{method}(")) {
                out.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    for (path, _, _) in sse_gateway::dashboard::ASSETS {
        out.insert(("GET".into(), path.to_owned()));
    }
    out
}

/// `(METHOD, path)` of the reference's Endpoints table (`| `GET /a`, `/b` | ...`).
fn referenced() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(root().join("docs/reference.md")).unwrap();
    let table = text
        .split("\n## Endpoints\n")
        .nth(1)
        .and_then(|t| t.split("\n### ").next())
        .expect("docs/reference.md has an Endpoints section");
    let mut out = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap().trim();
        let mut method = String::new();
        for part in cell.split(',') {
            let part = part.trim().trim_matches('`');
            let (m, path) = match part.split_once(' ') {
                Some((m, p)) => (m.to_owned(), p),
                None => (method.clone(), part),
            };
            method = m.clone();
            let path = path.split(['?', '[']).next().unwrap().trim_end_matches('`');
            out.insert((m, path.to_owned()));
        }
    }
    out
}

#[test]
fn the_document_names_every_route_and_every_referenced_endpoint() {
    let doc = sse_gateway::openapi::document("rakuda_token", &[]);
    let documented = documented(&doc);
    assert_eq!(documented, routed(), "the document (left) and routes.rs (right) differ");
    assert_eq!(
        documented,
        referenced(),
        "the document (left) and docs/reference.md's Endpoints (right) differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let Some(schemathesis) = which("schemathesis") else {
        panic!("schemathesis is not installed: `make deps-deploy` installs it from PyPI");
    };
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let env = env(&[
        ("REDIS_URL", &url),
        ("AUTH_MODE", "dev"),
        ("RUST_LOG", "warn"),
        // schemathesis publishes as fast as it can: the limit is not what is tested here.
        ("RAKUDA__AUTH__PUBLISH_RATE_PER_SEC", "100000"),
        // Web Push on, so its endpoints are exercised (a valid P-256 public key).
        (
            "RAKUDA__NOTIFICATIONS__PUSH__PUBLIC_KEY",
            "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY",
        ),
    ]);
    let gw = Service::start(&workspace_bin("sse-gateway"), &env).unwrap();
    let get = |path: &str| {
        let url = format!("{}{path}", gw.base());
        async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() }
    };
    let doc = get("/api/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let orders = &doc["components"]["schemas"]["publish-request"]["$defs"]["event"]["anyOf"];
    assert!(
        orders
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["properties"]["channel"]["const"] == "orders")),
        "the served document names the configured channels: {orders}"
    );
    let token = get("/api/dev/token").await["token"].as_str().unwrap().to_owned();

    let work = tempfile::tempdir().unwrap();
    let config = root().join("tests/schemathesis/schemathesis.toml");
    let mut child = Command::new(schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/api/openapi.json", gw.base())])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED, "--workers", "2"])
        .args(["--request-timeout", "5", "--no-color"])
        // Its example database and reports go into the test's own directory.
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.path().join("out.txt")).unwrap())
        .stderr(std::fs::File::create(work.path().join("err.txt")).unwrap())
        .spawn()
        .expect("start schemathesis");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polling a child process: there is no event to await for its exit in std.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = std::fs::read_to_string(work.path().join("out.txt")).unwrap_or_default();
    let err = std::fs::read_to_string(work.path().join("err.txt")).unwrap_or_default();
    let report = format!("{out}\n{err}\n--- gateway log ---\n{}", gw.log_text());
    let status = status.unwrap_or_else(|| panic!("schemathesis ran past {RUN_LIMIT:?}:\n{report}"));
    assert!(status.success(), "schemathesis found problems ({status}):\n{report}");
    // It really tested: every operation but none skipped for want of a schema.
    assert!(out.contains("passed"), "{report}");
    assert!(!out.contains("Errors:"), "{report}");
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
