//! The fuzz targets' corpora and every crash they found (`fuzz/corpus/<target>`,
//! `fuzz/artifacts/<target>`), replayed on stable through the same entry points the fuzzer
//! calls (`make fuzz` grows them): a fixed crash stays fixed.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("cursor", event_bus::fuzzing::cursor),
    ("envelope", event_bus::fuzzing::envelope),
    ("redis_reply", event_bus::fuzzing::redis_reply),
    ("lean_head", sse_gateway::fuzzing::lean_head),
    ("ws_command", sse_gateway::fuzzing::ws_command),
    ("credentials", sse_gateway::fuzzing::credentials),
    ("publish_body", sse_gateway::fuzzing::publish_body),
    ("framing", sse_gateway::fuzzing::framing),
    ("webhook", worker_emitter::fuzzing::webhook),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_fuzz_target_is_replayed() {
    let mut declared: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect();
    declared.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    replayed.sort();
    assert_eq!(
        declared, replayed,
        "a fuzz target without its replay here, or the reverse"
    );
}

#[test]
fn corpora_and_crashes_replay_without_a_failure() {
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let crashes = files(&fuzz_dir().join("artifacts").join(name));
        for input in corpus.iter().chain(&crashes) {
            // Gone since it was listed: `make fuzz` running beside this test replaced it.
            let data = match std::fs::read(input) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", input.display()),
            };
            if let Err(e) = std::panic::catch_unwind(|| target(&data)) {
                panic!("{}: {:?}", input.display(), e.downcast_ref::<String>());
            }
        }
    }
}
