//! A stream: what one client follows, independent of the transport (`docs/architecture.md`,
//! "The path of one event"). [`open`] checks a request and registers it with the hub; the
//! [`Stream`] then yields typed [`Frame`]s through the transport's [`Encoder`], ending with a
//! typed [`Ended`].
//!
//! # Layout
//! - [`request`]: [`StreamRequest`], what a transport hands over.
//! - [`open`]: checks, registration, resume positions; [`Refusal`].
//! - [`session`]: [`Stream`], its one home: declared and built there ([`Stream::new`]), its
//!   phases there, what it writes in `session::deliver` (the seam check, spans, groups,
//!   RESYNC, the unread snapshot, the catch-up's pages) and its live phase in `session::live`.
//! - [`coalesce`]: grouping bursts of one channel and type into one message.
//! - [`frame`]: [`Frame`], [`Ended`], [`Encoder`].
//! - `tally`: the delivered counter and latencies, counted per batch.

pub mod coalesce;
pub mod frame;
pub mod open;
pub mod request;
pub mod session;
pub(crate) mod tally;

pub use frame::{Encoder, Ended, Frame};
pub use open::{accepting, open, Refusal, RefusalKind};
pub use request::StreamRequest;
pub use session::Stream;
