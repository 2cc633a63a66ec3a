//! What every notification store does, and how it fails.

use std::{future::Future, time::Duration};

use crate::model::{Created, Marked, Page, PageQuery, Stored};

/// The store failed (Redis unreachable, or an unexpected reply).
#[derive(Debug, thiserror::Error)]
#[error("notification store: {0}")]
pub struct StoreError(pub(crate) String);

/// A per-user notification store.
///
/// Guarantees, per user: each operation is atomic (a reader never sees half of a create or a
/// mark); order is creation order; at most `cap` notifications are kept (the oldest go first,
/// read or not); a create with an idempotency key already used within
/// [`crate::config::IDEMPOTENCY_SECS`] stores nothing and answers the first notification;
/// users never see each other's notifications.
pub trait Store: Send + Sync + 'static {
    /// Stores `n` for its user, keeping at most `cap`; pushes the user's expiry to `ttl` from
    /// now; a repeated `idem` key returns the first.
    fn create(
        &self,
        n: Stored,
        idem: Option<&str>,
        cap: usize,
        ttl: Duration,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// One page of `user`'s notifications, newest first (`None` if `q.before` is not one of
    /// the user's).
    fn list(&self, user: &str, q: PageQuery<'_>) -> impl Future<Output = Result<Option<Page>, StoreError>> + Send;

    /// Marks `id` read (all of the user's, for `None`).
    fn mark_read(&self, user: &str, id: Option<&str>) -> impl Future<Output = Result<Marked, StoreError>> + Send;
}
