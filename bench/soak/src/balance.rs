//! Balance after each gateway restart: how long until neither gateway holds more than 1.3
//! times its fair share of the streams (half of both gateways' streams), and the share at the
//! next chaos event. A restarted gateway starts empty; the other sheds what is above its share
//! (`shed_above_fair_share`), and the shed streams reconnect through nginx.

use std::fmt::Write as _;

use crate::report::Sample;

/// The limit of the target: within 5 minutes of a restart, no gateway above 1.3 times its share.
const LIMIT: f64 = 1.3;
const WITHIN_SECS: f64 = 300.0;

/// The larger gateway's streams over its fair share, when both answered and hold any.
fn ratio(s: &Sample) -> Option<f64> {
    let (a, b) = (s.gw[0]?, s.gw[1]?);
    (a + b > 0.0).then(|| a.max(b) / ((a + b) / 2.0))
}

/// Writes a line per gateway restart; true when each came within the limit in time (or the
/// next gateway restart came first, and the share was within the limit by then).
pub fn report(t: &mut String, samples: &[Sample], events: &[(f64, String)]) -> bool {
    let _ = writeln!(
        t,
        "\nbalance after each gateway restart (the larger gateway's streams over its fair share):"
    );
    let mut all_ok = true;
    for (i, (at, what)) in events.iter().enumerate().filter(|(_, (_, w))| w.contains("gateway-2")) {
        // Until the next gateway restart: another event (a Redis restart) moves no stream.
        let end = events[i + 1..]
            .iter()
            .find(|(_, w)| w.contains("gateway"))
            .map_or(f64::INFINITY, |(t, _)| *t);
        let window: Vec<&Sample> = samples.iter().filter(|s| s.t > *at && s.t < end).collect();
        // The restart seen (a gateway not ready, or not answering), then both answering
        // again: from then, the first sample within the limit. A restart faster than a
        // sample is taken from the event on.
        let down = window
            .iter()
            .position(|s| !s.ready.iter().all(|r| *r) || s.gw.iter().any(Option::is_none))
            .unwrap_or(0);
        let within = window[down..]
            .iter()
            .skip_while(|s| !s.ready.iter().all(|r| *r))
            .find(|s| ratio(s).is_some_and(|r| r <= LIMIT))
            .map(|s| s.t - at);
        let last = window.iter().rev().find_map(|s| ratio(s));
        let ok = within.is_some_and(|w| w <= WITHIN_SECS);
        all_ok &= ok;
        let _ = writeln!(
            t,
            "  {at:>7.1}  {what:<22} within {LIMIT}x after {}; {} at the next gateway restart",
            within.map_or("never".to_owned(), |w| format!("{w:.0} s")),
            last.map_or("-".to_owned(), |r| format!("{r:.2}x")),
        );
    }
    all_ok
}
