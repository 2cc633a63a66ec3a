//! `stats-aggregator`: exact daily statistics in `rakuda:realtime:stats:<date>` (issue #5).
//!
//! # Layout
//! Filled by the stats-aggregator issue.
