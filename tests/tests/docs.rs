//! The docs stay true (docs/reference.md is the reference others depend on):
//! - every configuration key of every service, with its default, and every variable alias is
//!   in docs/reference.md;
//! - every citation of a file in a comment (`docs/…`, `proto-schemas/…`) names a file that
//!   exists, and nothing cites a contract that is not in the repository.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> String {
    fs::read_to_string(root().join("docs/reference.md")).expect("docs/reference.md")
}

/// `a.b.c` -> default, for every leaf of a serialized configuration (maps of user-chosen keys,
/// like secrets by name, are one entry).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() && !prefix.ends_with("secrets") && !prefix.ends_with("service_keys") => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

fn keys_of<T: serde::Serialize>(config: &T) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten("", &serde_json::to_value(config).unwrap(), &mut out);
    out
}

/// A service's name, its configuration keys with their defaults, and its variables.
type Service = (
    &'static str,
    BTreeMap<String, String>,
    &'static [(&'static str, &'static str)],
);

#[test]
fn every_configuration_key_and_variable_is_in_the_reference() {
    let doc = reference();
    let services: [Service; 5] = [
        (
            "sse-gateway",
            keys_of(&sse_gateway::GatewayConfig::default()),
            sse_gateway::ENV_ALIASES,
        ),
        (
            "stats-aggregator",
            keys_of(&stats_aggregator::AggregatorConfig::default()),
            stats_aggregator::ENV_ALIASES,
        ),
        (
            "worker-emitter",
            keys_of(&worker_emitter::EmitterConfig::default()),
            worker_emitter::ENV_ALIASES,
        ),
        (
            "rakuda-realtime",
            keys_of(&rakuda_realtime::Config::default()),
            rakuda_realtime::ENV_ALIASES,
        ),
        ("sinks", keys_of(&sinks::SinksConfig::default()), sinks::ENV_ALIASES),
    ];
    let mut missing = Vec::new();
    for (service, keys, aliases) in &services {
        for (key, default) in keys {
            // The all-in-one binary nests the gateway's keys under `gateway.`: those are the
            // gateway's rows.
            let key = key
                .strip_prefix("gateway.")
                .filter(|_| *service == "rakuda-realtime")
                .unwrap_or(key);
            if key == "instance_id" || key.ends_with(".instance_id") {
                continue; // the host name: no fixed default
            }
            if !doc.contains(&format!("`{key}`")) {
                missing.push(format!("{service}: `{key}` (default {default})"));
            }
        }
        for (var, _) in aliases.iter() {
            if !doc.contains(&format!("`{var}`")) {
                missing.push(format!("{service}: variable `{var}`"));
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/reference.md:\n{}", missing.join("\n"));
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "node_modules" && name != "target" {
                sources(&p, out);
            }
        } else if [".rs", ".js", ".lua", ".sh", ".py"].iter().any(|x| name.ends_with(x)) || name == "Makefile" {
            out.push(p);
        }
    }
}

#[test]
fn every_cited_file_exists_and_no_outside_contract_is_cited() {
    let mut files = Vec::new();
    for d in ["crates", "tests", "bench", "deploy"] {
        sources(&root().join(d), &mut files);
    }
    files.push(root().join("Makefile"));
    let mut bad = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_default();
        let name = f.strip_prefix(root()).unwrap().display().to_string();
        if name == "tests/tests/docs.rs" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            for outside in ["CONTRACT §", "PERFORMANCE.md", "shared/CONTRACT"] {
                if line.contains(outside) {
                    bad.push(format!(
                        "{name}:{}: cites {outside}, which is not in the repository",
                        n + 1
                    ));
                }
            }
            for start in ["docs/", "proto-schemas/"] {
                let mut rest = line;
                while let Some(i) = rest.find(start) {
                    let cited: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || "/._-".contains(*c))
                        .collect();
                    let cited = cited.trim_end_matches(['.', '/']);
                    let is_file = cited.contains('.');
                    if is_file && !root().join(cited).exists() {
                        bad.push(format!("{name}:{}: cites {cited}, which does not exist", n + 1));
                    }
                    rest = &rest[i + start.len()..];
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Every source file the architecture page names exists (paths under `crates/`, `tests/`, or,
/// for the gateway's table and its path of one event, under `crates/sse-gateway/src/`).
#[test]
fn the_architecture_names_files_that_exist() {
    let page = fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let mut named = 0;
    let mut missing = Vec::new();
    for cited in page.split('`').skip(1).step_by(2) {
        let is_path = cited.ends_with(".rs") || cited.ends_with(".lua") || cited.ends_with('/');
        if !is_path || cited.contains(' ') {
            continue;
        }
        named += 1;
        let candidates = [root().join(cited), root().join("crates/sse-gateway/src").join(cited)];
        if !candidates.iter().any(|p| p.exists()) {
            missing.push(cited.to_owned());
        }
    }
    assert!(
        named >= 20,
        "the page names {named} files: the check is reading the wrong page?"
    );
    assert!(
        missing.is_empty(),
        "docs/architecture.md names files that do not exist: {missing:?}"
    );
}
