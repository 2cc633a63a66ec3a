//! Who is calling: the settings, the keys, token verification (HS256 with a shared secret;
//! RS256/ES256 with a public key or a local JWKS file rotated by `kid`), where a token may come
//! from, and what it allows. Every endpoint but the open paths needs a token
//! (`docs/reference.md`, "Authentication").
//!
//! # Layout
//! - [`config`]: [`AuthMode`], [`AuthConfig`].
//! - [`principal`]: [`Principal`] (who, which channels, which role) and [`AuthError`].
//! - [`keys`]: loading the keys; JWKS reload by `kid`.
//! - [`jwt`]: [`Verifier`]: verification, dev-mode minting.
//! - [`token`]: where a token is in a request; [`redact`].
//! - [`origin`]: whether a browser request's `Origin` may act.
//! - [`ticket`]: short-lived stream tickets, so stream URLs carry no token.

pub mod config;
pub mod jwt;
pub mod keys;
pub mod origin;
pub mod principal;
pub mod ticket;
pub mod token;

pub use config::{AuthConfig, AuthMode};
pub use jwt::Verifier;
pub use principal::{AuthError, Grant, Principal};
pub use token::redact;
