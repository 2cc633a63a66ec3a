//! Benchmark bookkeeping shared by the `make bench` harnesses: figures per run, medians at the
//! end, printed as one JSON summary line and a table.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Whether `cargo bench` started this harness (it passes `--bench`). `cargo test
/// --all-targets` also builds and runs `harness = false` benches, without it: they should then
/// only prove they start, not measure (benchmarks are `make bench`, never part of `make test`).
pub fn measuring() -> bool {
    let yes = std::env::args().any(|a| a == "--bench");
    if !yes {
        eprintln!("benchmark built; run it with `cargo bench` or `make bench` to measure");
    }
    yes
}

/// `BENCH_RUNS`, or `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(default)
}

/// The runtime the harnesses measure in: two workers, like the machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The body of a harness against one redis-server: unless `cargo bench` started it (see
/// [`measuring`]), returns at once; otherwise starts a server and runs `body(server,
/// runs)` on [`runtime`], with `BENCH_RUNS` or `default_runs`.
pub fn with_redis<F, Fut>(default_runs: usize, body: F)
where
    F: FnOnce(crate::RedisServer, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if !measuring() {
        return;
    }
    let runs = runs(default_runs);
    let server = crate::RedisServer::start().expect("start redis-server (make bench installs it)");
    runtime().block_on(body(server, runs));
}

/// The `q` quantile of `v` (sorted here), by the nearest-rank method.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Figures of repeated runs, by name.
#[derive(Debug, Default)]
pub struct Figures {
    runs: BTreeMap<String, Vec<f64>>,
}

impl Figures {
    /// Records one run's value of each figure.
    pub fn record<'a>(&mut self, values: impl IntoIterator<Item = (&'a str, f64)>) {
        for (k, v) in values {
            self.runs.entry(k.to_owned()).or_default().push(v);
        }
    }

    /// The median of each figure (rounded to 3 decimals).
    pub fn medians(&self) -> Map<String, Value> {
        self.runs
            .iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                v.sort_by(|a, b| a.total_cmp(b));
                (k.clone(), json!((v[v.len() / 2] * 1000.0).round() / 1000.0))
            })
            .collect()
    }

    /// Prints the summary line (stdout) and a table (stderr) for `bench`.
    pub fn print_summary(&self, bench: &str, runs: usize, what: &str) {
        let med = self.medians();
        println!(
            "{}",
            json!({"bench": bench, "summary": "median", "runs": runs, "figures": med})
        );
        eprintln!("\n{bench} benchmark, medians of {runs} runs ({what}):");
        for (k, v) in &med {
            eprintln!("  {k:<28} {v}");
        }
    }
}
