//! Key names, under the bus prefix (`rakuda:realtime:` by default).

use chrono::NaiveDate;

/// The presence kind of gateways: their figures are in `<prefix>gateway:<instance>`.
pub const GATEWAY_KIND: &str = "gateway";

/// `<prefix>stats:<YYYY-MM-DD>`: one UTC day.
pub fn day_key(prefix: &str, day: NaiveDate) -> String {
    format!("{prefix}stats:{}", day.format("%Y-%m-%d"))
}

/// `<prefix>stats:progress`: where each channel was last known to be aggregated (a hint).
pub fn hints_key(prefix: &str) -> String {
    format!("{prefix}stats:progress")
}

/// `<prefix>stats:lease:{<name>}`: who aggregates a channel now.
pub fn lease_key(prefix: &str, name: &str) -> String {
    format!("{prefix}stats:lease:{{{name}}}")
}

/// The marker field of a channel inside a daily hash: the last stream id aggregated into it.
pub fn progress_field(channel: &str) -> String {
    format!("progress:{channel}")
}
