//! The broker as the control API sees it: the [`ControlBackend`] trait.
//!
//! The HTTP side never touches the session table or the pool directly; the
//! broker implements this trait and tests use an in-memory fake. Methods
//! that may wait on a session's owner or the pool return boxed futures so the
//! trait stays object safe (`Arc<dyn ControlBackend>`).

use futures::future::BoxFuture;
use mqttd_api::{PoolInfo, SessionDetail, SessionPage, SessionQuery, Status};

use crate::metrics::Metrics;

/// Why the broker could not do what the control API asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The session (or other named thing) does not exist; answered with 404.
    #[error("not found")]
    NotFound,
    /// The request is well-formed but refused; answered with 400 and the reason.
    #[error("{0}")]
    Rejected(String),
    /// The broker cannot answer now (e.g. shutting down); answered with 503.
    #[error("{0}")]
    Unavailable(String),
}

/// What the control API and the health server need from the broker.
pub trait ControlBackend: Send + Sync + 'static {
    /// Version, uptime, listeners and headline counts.
    fn status(&self) -> BoxFuture<'_, Status>;

    /// One page of sessions ordered by client id, filtered by `query`.
    ///
    /// `query` has been validated: `query.page_limit()` is in
    /// `1..=MAX_PAGE_LIMIT`. The sessions start after `query.cursor` (a
    /// `next_cursor` this backend produced earlier); `total` counts every
    /// session matching the filters, and `next_cursor` is `None` on the last
    /// page.
    fn list_sessions<'a>(
        &'a self,
        query: &'a SessionQuery,
    ) -> BoxFuture<'a, Result<SessionPage, BackendError>>;

    /// One session; [`BackendError::NotFound`] if no session has this id.
    fn session<'a>(
        &'a self,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<SessionDetail, BackendError>>;

    /// Destroys a session (disconnecting its client, if any) and waits until
    /// it is gone; [`BackendError::NotFound`] if no session has this id.
    fn destroy_session<'a>(&'a self, client_id: &'a str)
        -> BoxFuture<'a, Result<(), BackendError>>;

    /// The session-manager pool.
    fn pool(&self) -> BoxFuture<'_, PoolInfo>;

    /// Resizes the pool to `size` workers (already checked to be in
    /// `MIN_POOL_SIZE..=MAX_POOL_SIZE`) and returns the new pool.
    fn resize_pool(&self, size: usize) -> BoxFuture<'_, Result<PoolInfo, BackendError>>;

    /// Whether the broker accepts clients (`/readyz`).
    fn ready(&self) -> bool;

    /// Counters rendered on `/metrics`.
    fn metrics(&self) -> &Metrics;
}
