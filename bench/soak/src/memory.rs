//! Resident memory over time, per process life: the trend over the whole life after the
//! warm-up, and the trend between chaos events. A restart, a kill -9 or a Redis restart makes
//! a gateway take a herd of reconnects at once; the allocator keeps that high-water mark, so
//! the whole-life trend shows steps. A leak grows between the events too: the target is
//! judged there (median over the quiet stretches), and the steps are listed.

use std::fmt::Write as _;

use crate::{report::Sample, topology::SERVICES};

/// Least-squares slope of `(t, kib)`, as % of the mean per 10 minutes; and the mean.
fn slope(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 5 {
        return None;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx * 600.0 / my * 100.0, my))
}

/// Writes the memory section; true when every long-lived process but Redis stays under 1%
/// per 10 minutes between the events.
pub fn report(t: &mut String, samples: &[Sample], events: &[(f64, String)], warm: f64) -> bool {
    let _ = writeln!(
        t,
        "\nresident memory after the warm-up ({warm:.0} s), per process life of 5 min or more \
         (slope in % of the mean per 10 min; 'between events': median over the stretches between chaos events):"
    );
    let mut ok = true;
    for (k, name) in SERVICES.iter().enumerate() {
        let mut lives: Vec<(u32, Vec<(f64, f64)>)> = Vec::new();
        for x in samples.iter().filter(|x| x.t >= warm) {
            if let Some((pid, kib)) = x.rss[k] {
                match lives.last_mut() {
                    Some((p, pts)) if *p == pid => pts.push((x.t, kib as f64)),
                    _ => lives.push((pid, vec![(x.t, kib as f64)])),
                }
            }
        }
        let long: Vec<_> = lives
            .iter()
            .filter(|(_, p)| p.last().unwrap().0 - p[0].0 >= 300.0)
            .collect();
        if long.is_empty() {
            let peak = lives
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .fold(0.0, f64::max);
            let _ = writeln!(
                t,
                "  {name:<17} {} lives, none 5 min long; peak {:.1} MiB",
                lives.len(),
                peak / 1024.0
            );
        }
        for (pid, pts) in long {
            let Some((whole, mean)) = slope(pts) else { continue };
            // The stretches between events (from 15 s after one to the next), 60 s or longer.
            let mut cuts: Vec<f64> = events.iter().map(|e| e.0).collect();
            cuts.push(f64::INFINITY);
            let mut quiet = Vec::new();
            let mut steps = Vec::new();
            let mut from = f64::NEG_INFINITY;
            for cut in cuts {
                let seg: Vec<(f64, f64)> = pts
                    .iter()
                    .copied()
                    .filter(|p| p.0 >= from + 15.0 && p.0 < cut)
                    .collect();
                if seg.len() >= 2 && seg.last().unwrap().0 - seg[0].0 >= 60.0 {
                    if let Some((q, _)) = slope(&seg) {
                        quiet.push(q);
                    }
                }
                // The change across the event: the last point before it to the first 15 s after.
                let before = pts.iter().rev().find(|p| p.0 < cut);
                let after = pts.iter().find(|p| p.0 >= cut + 15.0);
                if let (Some(b), Some(a)) = (before, after) {
                    let pct = (a.1 - b.1) / b.1 * 100.0;
                    if pct.abs() >= 1.0 {
                        steps.push(format!("{pct:+.0}% at t={cut:.0}"));
                    }
                }
                from = cut;
            }
            quiet.sort_by(f64::total_cmp);
            let between = quiet.get(quiet.len() / 2).copied();
            let redis = *name == "redis";
            if !redis {
                ok &= between.is_some_and(|b| b.abs() < 1.0);
            }
            let _ =
                writeln!(
                t,
                "  {name:<17} pid {pid:<7} mean {:>6.1} MiB  whole life {whole:+.2}%  between events {}  steps: {}{}",
                mean / 1024.0,
                between.map_or("n/a".to_owned(), |b| format!("{b:+.2}%")),
                if steps.is_empty() { "none".to_owned() } else { steps.join(", ") },
                if redis { "  (Redis holds the streams up to their retention: its data grows by design)" } else { "" }
            );
        }
    }
    ok
}
