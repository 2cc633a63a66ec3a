//! End-to-end tests across services and processes.
