//! `sinks`: the same events to outside destinations, for the people whose dashboard is closed.
//!
//! This crate is being built in steps (issue 14). What is here is the part every delivery path
//! shares and that holds no connection: which events go where, what each destination is sent,
//! and what each destination's answer means.
//!
//! # Layout
//! Dependencies point down this list:
//! - [`config`]: [`SinksConfig`], routes and destinations, checked naming the key; [`Secret`]s
//!   that never print.
//! - [`route`]: [`Route`] matching (channels, types, conditions on payload fields).
//! - [`template`]: a message from an event, or a digest of several.
//! - [`destination`]: one file per kind (Slack, Discord, LINE, Standard Webhooks): the request a
//!   message becomes, with its idempotency key, and the [`Outcome`] of an answer.
//! - [`key`]: the stable idempotency key of an (event, destination).

pub mod config;
pub mod destination;
pub mod key;
pub mod route;
pub mod template;

pub use config::{Secret, SinksConfig};
pub use destination::{Outcome, Request};
pub use route::Route;
