//! The npm package (`clients/js`, `@rakuda/realtime`) as a frontend team uses it: a React +
//! TanStack Query page built with vite, served over plain HTTP/1.1, in Debian's Chromium
//! (`tests/node/react-test.mjs`); and its TypeScript declarations with `tsc --strict`, on
//! their own and under a consumer file (`tests/node/react-app/consumer.tsx`).

use std::{path::Path, process::Command, time::Duration};

use serde_json::{json, Value};
use testkit::{
    node::NodeScript,
    process::{env, Service},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_refetch_eight_tabs_share_one_stream_and_a_closed_leader_loses_nothing() {
    let env = env(&[("REDIS_URL", ""), ("DEMO", "false"), ("RUST_LOG", "warn")]);
    let svc = Service::start(Path::new(env!("CARGO_BIN_EXE_rakuda-realtime")), &env).unwrap();
    let port = testkit::free_port(false).to_string();
    let script = NodeScript::start("react-test.mjs", &[&svc.base(), &port], &[]);
    let r: Value = tokio::task::block_in_place(|| script.finish(Duration::from_secs(120)));
    assert!(r.get("error").is_none(), "{r}\n{}", svc.log_text());
    assert_eq!(r["errors"], json!([]), "console errors: {r}");
    // ORDER_RECEIVED refetched orders, PRICE_CHANGE pricing; inventory only loaded once.
    assert_eq!(r["fetches"], json!({"orders": 2, "inventory": 1, "pricing": 2}), "{r}");
    let leaders = |roles: &Value| roles.as_array().unwrap().iter().filter(|x| *x == "leader").count();
    assert_eq!(r["roles"].as_array().map(Vec::len), Some(8), "{r}");
    assert_eq!(leaders(&r["roles"]), 1, "one leader among 8 tabs: {r}");
    assert_eq!(r["streams"], 1, "8 live tabs on one stream: {r}");
    assert_eq!(r["allTabsGotIt"], 8, "{r}");
    // The 7 tabs left after the leader closed: each got each of the 40 events exactly once.
    let handover = r["handover"].as_array().unwrap();
    assert_eq!(handover.len(), 7, "{r}");
    for counts in handover {
        assert_eq!(counts, &Value::from(vec![1; 40]), "{r}");
    }
    assert_eq!(leaders(&r["rolesAfter"]), 1, "a new leader: {r}");
    assert_eq!(r["streamsAfter"], 1, "{r}");
}

#[test]
fn tsc_strict_accepts_the_declarations_and_a_consumer() {
    let dir = testkit::node_dir();
    let out = Command::new(dir.join("node_modules/.bin/tsc"))
        .args(["-p", "tsconfig.json"])
        .current_dir(&dir)
        .output()
        .expect("tsc: make test installs it (tests/node)");
    assert!(
        out.status.success(),
        "tsc --strict:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check is strict, and it reads the package's own declarations.
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tsconfig.json")).unwrap()).unwrap();
    assert_eq!(config["compilerOptions"]["strict"], true);
    assert!(config["files"]
        .to_string()
        .contains("@rakuda/realtime/types/index.d.ts"));
}
