//! `soak.png`: connections, latency and memory over time, one panel each, the chaos marked
//! as dashed lines (gnuplot, Debian's `gnuplot-nox`, reading `samples.tsv`).

use std::{fmt::Write as _, path::Path, process::Command};

use crate::topology::SERVICES;

pub fn png(dir: &Path, events: &[(f64, String)]) -> std::io::Result<()> {
    let mut gp = String::new();
    let _ = writeln!(gp, "set terminal pngcairo size 1400,1200 font ',10'");
    let _ = writeln!(gp, "set output '{}'", dir.join("soak.png").display());
    let _ = writeln!(gp, "set datafile separator '\\t'");
    let _ = writeln!(gp, "set key autotitle columnhead outside right");
    let _ = writeln!(gp, "set grid");
    let _ = writeln!(gp, "set multiplot layout 3,1 title 'rakuda-realtime soak'");
    for (t, what) in events {
        let color = if what.contains("kill") {
            "red"
        } else if what.contains("redis") {
            "blue"
        } else {
            "gray"
        };
        let _ = writeln!(
            gp,
            "set arrow from {t},graph 0 to {t},graph 1 nohead dt 2 lc rgb '{color}'"
        );
    }
    let data = dir.join("samples.tsv");
    let d = data.display();
    let _ = writeln!(gp, "set ylabel 'streams'");
    let _ = writeln!(
        gp,
        "plot '{d}' using 1:2 with lines lw 2 title 'clients connected', '' using 1:3 with lines title 'gateway-1', '' using 1:4 with lines title 'gateway-2'"
    );
    let _ = writeln!(gp, "set ylabel 'event -> client (ms)'");
    let _ = writeln!(gp, "set logscale y");
    let _ = writeln!(
        gp,
        "plot '{d}' using 1:7 with lines title 'p50', '' using 1:8 with lines lw 2 title 'p99'"
    );
    let _ = writeln!(gp, "unset logscale y");
    let _ = writeln!(gp, "set ylabel 'RSS (MiB)'");
    let _ = writeln!(
        gp,
        "set xlabel 'seconds since the load started (gray: SIGTERM restart, red: kill -9, blue: Redis SHUTDOWN SAVE)'"
    );
    let series: Vec<String> = SERVICES
        .iter()
        .enumerate()
        .map(|(i, n)| format!("'{d}' using 1:{} with lines title '{n}'", 10 + i))
        .collect();
    let _ = writeln!(gp, "plot {}", series.join(", "));
    let _ = writeln!(gp, "unset multiplot");
    let script = dir.join("plot.gp");
    std::fs::write(&script, gp)?;
    let status = Command::new("gnuplot").arg(&script).status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "gnuplot {} failed: {status}",
            script.display()
        )));
    }
    Ok(())
}
