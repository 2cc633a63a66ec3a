//! `sse-gateway`: the stateless SSE service, many replicas over Redis (issue #3).
//!
//! # Layout
//! Filled by the gateway issue: `app(state) -> Router`, the fan-out hub, the coalescer.
