//! A lock-free latency histogram: log buckets 2% wide from 1 µs to over 100 s.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const GROWTH: f64 = 1.02;
const BUCKETS: usize = 1000;

/// Counts of latencies by bucket.
pub struct Histogram {
    counts: Vec<AtomicU64>,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record_us(&self, us: u64) {
        let i = ((us.max(1) as f64).ln() / GROWTH.ln()) as usize;
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    /// The upper edge of the bucket holding quantile `q`, in ms; None without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((GROWTH.powi(i as i32 + 1) / 1000.0 * 1000.0).round() / 1000.0);
            }
        }
        None
    }
}
