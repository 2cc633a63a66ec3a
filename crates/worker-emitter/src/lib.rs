//! `worker-emitter`: processors on BullMQ-compatible queues that emit realtime events (issue #4).
//!
//! # Layout
//! Filled by the worker-emitter issue: the queue consumer and the four processors.
