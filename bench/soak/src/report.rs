//! What the soak found: the text report (`report.txt`, also printed), the samples over time
//! (`samples.tsv`, `events.tsv`) and their plot (`soak.png`, by gnuplot).

use std::{
    fmt::Write as _,
    path::Path,
    sync::{Arc, Mutex},
};

use crate::{client::Record, hist::Window, load::Acked, run::Settings, topology::SERVICES};

/// One look at the system, every `SOAK_SAMPLE_SECS`.
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// Clients holding a stream.
    pub clients: usize,
    /// Each gateway's open streams (its `/metrics`), when it answered.
    pub gw: [Option<f64>; 2],
    /// Each gateway's `/readyz`.
    pub ready: [bool; 2],
    /// Each service's pid and resident memory in KiB, in [`SERVICES`] order.
    pub rss: [Option<(u32, u64)>; 6],
    /// Event-to-client latency in the window since the previous sample.
    pub latency: Window,
    /// Events acknowledged so far.
    pub acked: u64,
}

pub struct Outcome {
    text: String,
    samples: Vec<Sample>,
    events: Vec<(f64, String)>,
    pub passed: bool,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

impl Outcome {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s: &Settings,
        records: Vec<Arc<Mutex<Record>>>,
        channels: Vec<&'static str>,
        acked: Acked,
        uptime: Vec<f64>,
        samples: Vec<Sample>,
        events: Vec<(f64, String)>,
        caught_up: bool,
        start: std::time::Instant,
    ) -> Outcome {
        let mut t = String::new();
        let (mut lost, mut dups, mut resyncs, mut reconnects, mut churns, mut failures, mut unexpected) =
            (0, 0, 0, 0, 0, 0, 0);
        let mut clients_losing = 0;
        for (r, ch) in records.iter().zip(&channels) {
            let r = r.lock().unwrap();
            let empty = Default::default();
            let a = acked.by_channel.get(ch).unwrap_or(&empty);
            let m = a.missing_from(&r.seen);
            lost += m;
            clients_losing += (m > 0) as u64;
            unexpected += r.seen.missing_from(a);
            dups += r.duplicates;
            resyncs += r.resyncs;
            reconnects += r.reconnects;
            churns += r.churns;
            failures += r.failures;
        }
        // Who lost what: the clients short of an acknowledged event, with the span missing.
        let mut losers = Vec::new();
        for (i, (r, ch)) in records.iter().zip(&channels).enumerate() {
            let r = r.lock().unwrap();
            let empty = Default::default();
            let a = acked.by_channel.get(ch).unwrap_or(&empty);
            if let Some((first, last)) = a.missing_span(&r.seen) {
                losers.push(format!(
                    "    client {i:<5} {ch:<9} {} missing, seq {first}..={last}; {} resumes, {} reloads, {} failed opens",
                    a.missing_from(&r.seen),
                    r.reconnects,
                    r.churns,
                    r.failures
                ));
            }
        }
        let mut up = uptime.clone();
        up.sort_by(f64::total_cmp);
        let below = |x: f64| up.iter().filter(|u| **u < x).count();
        match s.faults {
            Some(f) => {
                let _ = writeln!(
                    t,
                    "rakuda-realtime soak, network faults: {} min, {} clients, {} events/s ({} BullMQ order jobs, the rest direct publishes)\n  {}",
                    s.minutes,
                    s.clients,
                    s.rate,
                    crate::faults::Faults::job_rate(Some(f), s.rate),
                    f.describe()
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "rakuda-realtime soak: {} min, {} clients, {} events/s (half BullMQ order jobs, half direct publishes), a gateway restart every {} s",
                    s.minutes, s.clients, s.rate, s.restart_secs
                );
            }
        }
        let _ = writeln!(t, "\nchaos (seconds after the load started):");
        for (at, what) in &events {
            let _ = writeln!(t, "  {at:>7.1}  {what}");
        }
        let _ = writeln!(t, "\nevents acknowledged (refused while Redis was away):");
        let mut names: Vec<_> = acked.by_channel.keys().copied().collect();
        names.sort();
        for n in names {
            let _ = writeln!(
                t,
                "  {n:<10} {:>8} ({} refused)",
                acked.by_channel[n].len(),
                acked.refused.get(n).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            t,
            "\ndelivery (every client against every acknowledged event of its channel):"
        );
        let _ = writeln!(
            t,
            "  lost        {lost} ({clients_losing} clients){}",
            if caught_up {
                ""
            } else {
                "  (still missing a minute after the load stopped)"
            }
        );
        for l in losers.iter().take(10) {
            let _ = writeln!(t, "{l}");
        }
        let _ = writeln!(t, "  duplicated  {dups}");
        let _ = writeln!(t, "  RESYNC      {resyncs}");
        let _ = writeln!(
            t,
            "  received but never acknowledged (a publish that timed out yet was stored): {unexpected}"
        );
        let _ = writeln!(
            t,
            "  stream ends resumed {reconnects}, page reloads {churns}, failed opens {failures}"
        );
        let _ = writeln!(t, "\ntime connected per client, over the load window:");
        let _ = writeln!(
            t,
            "  min {:.4}%  p1 {:.4}%  median {:.4}%  mean {:.4}%",
            quantile(&up, 0.0) * 100.0,
            quantile(&up, 0.01) * 100.0,
            quantile(&up, 0.5) * 100.0,
            up.iter().sum::<f64>() / up.len().max(1) as f64 * 100.0
        );
        let _ = writeln!(t, "  clients below 99.9%: {}, below 99%: {}", below(0.999), below(0.99));
        let mut order: Vec<usize> = (0..uptime.len()).collect();
        order.sort_by(|a, b| uptime[*a].total_cmp(&uptime[*b]));
        let _ = writeln!(
            t,
            "  the five least connected (longest time without a stream, and when it began):"
        );
        for &i in order.iter().take(5) {
            let r = records[i].lock().unwrap();
            let at = r
                .longest_gap_at
                .map_or(f64::NAN, |g| g.saturating_duration_since(start).as_secs_f64());
            let _ = writeln!(
                t,
                "    client {i:<5} {:<9} {:.4}%  longest gap {:.2} s at t={at:.0} s; {} resumes, {} reloads, {} failed opens",
                channels[i],
                uptime[i] * 100.0,
                r.longest_gap.as_secs_f64(),
                r.reconnects,
                r.churns,
                r.failures
            );
        }
        let p99: Vec<f64> = samples
            .iter()
            .filter(|x| x.latency.count > 0)
            .map(|x| x.latency.p99)
            .collect();
        let mut sorted = p99.clone();
        sorted.sort_by(f64::total_cmp);
        let _ = writeln!(
            t,
            "\nevent -> client latency, p99 per {} s window (ms; includes the 500 ms grouping window): median {:.0}, worst {:.0}",
            s.sample_secs,
            quantile(&sorted, 0.5),
            sorted.last().copied().unwrap_or(f64::NAN)
        );
        let worst = samples.iter().map(|x| x.latency.max).fold(0.0, f64::max);
        let _ = writeln!(t, "  the slowest single event: {worst:.0} ms");
        let halves = sorted.len() / 2;
        if halves > 0 {
            let first: Vec<f64> = {
                let mut v = p99[..halves].to_vec();
                v.sort_by(f64::total_cmp);
                v
            };
            let second: Vec<f64> = {
                let mut v = p99[halves..].to_vec();
                v.sort_by(f64::total_cmp);
                v
            };
            let _ = writeln!(
                t,
                "  median window p99, first half {:.0} ms, second half {:.0} ms",
                quantile(&first, 0.5),
                quantile(&second, 0.5)
            );
        }
        let warm = (s.minutes * 60.0 / 6.0).max(60.0);
        let rss_ok = crate::memory::report(&mut t, &samples, &events, warm);
        let balanced = crate::balance::report(&mut t, &samples, &events);
        // Under network faults a stream is meant to end and resume (a reset): only what
        // arrived counts there.
        let connected_ok = below(0.999) == 0 || s.faults.is_some();
        let passed = lost == 0 && dups == 0 && caught_up && connected_ok && rss_ok && balanced;
        let _ = writeln!(
            t,
            "\ntargets: lost 0 [{}], duplicated 0 [{}], connected >= 99.9% each [{}], RSS slope < 1%/10 min [{}], within 1.3x the fair share within 5 min of each gateway restart [{}]",
            ok(lost == 0 && caught_up),
            ok(dups == 0),
            if s.faults.is_some() {
                "not a target under faults"
            } else {
                ok(connected_ok)
            },
            ok(rss_ok),
            ok(balanced)
        );
        Outcome {
            text: t,
            samples,
            events,
            passed,
        }
    }

    /// Writes the report, the samples and the plot into `dir`; returns the report.
    pub fn write(&self, dir: &Path) -> std::io::Result<&str> {
        std::fs::write(dir.join("report.txt"), &self.text)?;
        let mut tsv = String::from("t\tclients\tgw1\tgw2\tready1\tready2\tp50_ms\tp99_ms\tacked");
        for n in SERVICES {
            let _ = write!(tsv, "\trss_{}_mib", n.replace('-', "_"));
        }
        tsv.push('\n');
        for x in &self.samples {
            let opt = |v: Option<f64>| v.map_or("NaN".to_owned(), |v| format!("{v}"));
            let _ = write!(
                tsv,
                "{:.1}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                x.t,
                x.clients,
                opt(x.gw[0]),
                opt(x.gw[1]),
                x.ready[0] as u8,
                x.ready[1] as u8,
                if x.latency.count > 0 {
                    format!("{}", x.latency.p50)
                } else {
                    "NaN".into()
                },
                if x.latency.count > 0 {
                    format!("{}", x.latency.p99)
                } else {
                    "NaN".into()
                },
                x.acked
            );
            for r in &x.rss {
                let _ = write!(
                    tsv,
                    "\t{}",
                    r.map_or("NaN".to_owned(), |(_, k)| format!("{:.2}", k as f64 / 1024.0))
                );
            }
            tsv.push('\n');
        }
        std::fs::write(dir.join("samples.tsv"), tsv)?;
        let events: String = self.events.iter().map(|(t, w)| format!("{t:.1}\t{w}\n")).collect();
        std::fs::write(dir.join("events.tsv"), events)?;
        crate::plot::png(dir, &self.events)?;
        Ok(&self.text)
    }
}

fn ok(b: bool) -> &'static str {
    if b {
        "ok"
    } else {
        "FAILED"
    }
}
