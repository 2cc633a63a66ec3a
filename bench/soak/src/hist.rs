//! A lock-free latency histogram (log buckets 2% wide, 1 ms to over an hour) that the sampler
//! empties each window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const GROWTH: f64 = 1.02;
const BUCKETS: usize = 800;

pub struct Histogram {
    counts: Vec<AtomicU64>,
}

/// Quantiles of one window, in ms.
#[derive(Clone, Copy, Default)]
pub struct Window {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record_ms(&self, ms: u64) {
        let i = ((ms.max(1) as f64).ln() / GROWTH.ln()) as usize;
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    /// The window since the last call (each quantile the upper edge of its bucket).
    pub fn take(&self) -> Window {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.swap(0, Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let edge = |i: usize| GROWTH.powi(i as i32 + 1).round();
        let at = |q: f64| {
            let rank = ((q * count as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return edge(i);
                }
            }
            0.0
        };
        if count == 0 {
            return Window::default();
        }
        let max = counts.iter().rposition(|c| *c > 0).map(edge).unwrap_or(0.0);
        Window {
            count,
            p50: at(0.5),
            p99: at(0.99),
            max,
        }
    }
}
