//! The fields of a daily hash `<prefix>stats:<YYYY-MM-DD>`, each documented in
//! `proto-schemas/README.md` (a test checks that every one is).

/// Every field of a daily hash, as documented (`<...>` is a placeholder).
pub const FIELDS: &[(&str, &str)] = &[
    ("events", "events counted on this day"),
    ("type:<TYPE>", "events per type"),
    ("channel:<channel>", "events per channel"),
    ("action:<action>", "events per payload action"),
    ("hour:<HH>", "events per UTC hour 00..23 (by acceptance time)"),
    (
        "first_event_ms",
        "acceptance time (stream id, Unix ms) of the day's first event",
    ),
    ("last_event_ms", "acceptance time of the day's last event"),
    (
        "late",
        "events whose own timestamp lies on an earlier UTC day than their acceptance",
    ),
    ("malformed", "stream entries that are not events, skipped"),
    (
        "malformed:<kind>",
        "by kind: not_json, not_envelope, unknown_type, bad_entry",
    ),
    (
        "progress:<channel>",
        "the last stream id of the channel aggregated into this hash",
    ),
    (
        "gw:connections_peak",
        "highest sum of open connections over all gateways, sampled",
    ),
    ("gw:connections_peak_ms", "when that peak was sampled (Unix ms)"),
    ("gw:connections_total", "streams opened"),
    (
        "gw:reconnects_total",
        "streams opened with a cursor (a client resuming)",
    ),
    ("gw:delivered_total", "events written to clients"),
    ("gw:slow_consumer_disconnects_total", "clients cut for not keeping up"),
    (
        "gw:latency_le_<seconds>",
        "delivery latency histogram, cumulative count per bucket",
    ),
    ("gw:latency_count", "deliveries measured for latency"),
    (
        "gwbase:<instance>:<field>",
        "the last gateway counter value folded in (for deltas)",
    ),
];

#[cfg(test)]
mod tests {
    /// Every documented field name appears in proto-schemas/README.md.
    #[test]
    fn fields_are_documented() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto-schemas/README.md"))
            .expect("proto-schemas/README.md");
        for (field, _) in super::FIELDS {
            assert!(readme.contains(&format!("`{field}`")), "{field} is not documented");
        }
    }
}
