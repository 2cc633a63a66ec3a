//! Which UTC day a stream id belongs to: the moment the bus accepted the entry, the moment every
//! dashboard saw it live.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use event_bus::EventId;

/// The UTC day of a stream id.
pub fn day_of(id: EventId) -> NaiveDate {
    at(id.ms).date_naive()
}

/// A Unix-ms instant as UTC time (clamped to the representable range).
pub fn at(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms.min(i64::MAX as u64) as i64)
        .single()
        .unwrap_or_default()
}

/// Midnight UTC at the start of `day`, in Unix seconds.
pub fn day_start_secs(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp()
}

/// The days from `from` to `to`, inclusive.
pub fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|d| d.year() >= 1970 && text.len() == 10)
        .ok_or_else(|| format!("{text:?} is not a date of the form YYYY-MM-DD (from 1970 on)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_strictly() {
        assert_eq!(parse_day("2026-11-23").unwrap().to_string(), "2026-11-23");
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("2026-1-01").is_err());
        assert_eq!(day_of(EventId::new(1_795_478_399_999, 0)).to_string(), "2026-11-23");
        assert_eq!(day_of(EventId::new(1_795_478_400_000, 0)).to_string(), "2026-11-24");
    }
}
