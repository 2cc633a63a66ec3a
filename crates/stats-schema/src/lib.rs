//! `stats-schema`: the statistics as they are stored, shared by the service that writes them
//! (`stats-aggregator`) and the one that reads them (`sse-gateway`), so that neither links the
//! other and no field name is written twice.
//!
//! Two kinds of hash (see `docs/reference.md`, "Redis keys"):
//! - `<prefix>gateway:<instance>`: one gateway's live figures, refreshed on a heartbeat
//!   ([`figures::GatewayFigures`]);
//! - `<prefix>stats:<YYYY-MM-DD>`: one UTC day's exact statistics ([`fields::FIELDS`]),
//!   with the gateways' counters folded in as `gw:<field>`.
//!
//! # Layout
//! - [`keys`]: key names.
//! - [`fields`]: the fields of a daily hash, as documented in `proto-schemas/README.md`.
//! - [`figures`]: a gateway's figures, typed, and the counters the aggregator folds.
//! - [`latency`]: histogram buckets, merged, and quantiles from them.
//! - [`time`]: UTC days of stream ids, parsing `YYYY-MM-DD`.
//! - [`daily`]: a daily hash as JSON, a range of days and their sum.
//! - [`read`]: where the daily hashes are read ([`read::DayStore`]: this process or Redis).

pub mod daily;
pub mod fields;
pub mod figures;
pub mod keys;
pub mod latency;
pub mod read;
pub mod time;

pub use daily::{daily_json, MAX_RANGE_DAYS};
pub use figures::GatewayFigures;
pub use read::{daily, range, DayStore, MemoryDays, RangeError, ReadError};
