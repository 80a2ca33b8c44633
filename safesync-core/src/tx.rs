//! Transactions.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::OwnedMutexGuard;
use tracing::Instrument as _;

use crate::backend::{Dialect, TxInner, on_tx};
use crate::error::Result;
use crate::metrics::Metrics;

/// A database transaction on any backend.
///
/// Dropped without [`commit`](Tx::commit) it rolls back, also when the task
/// holding it panics. Record operations and row locks take `&mut Tx`, so they
/// cannot run outside a transaction.
///
/// On SQLite every transaction is `BEGIN IMMEDIATE`: it holds the database's
/// write lock from its first statement, and transactions of one [`Db`](crate::Db)
/// queue for it in order instead of polling the busy handler.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = safesync_core::Db::connect("sqlite::memory:").await?;
/// let tx = db.begin().await?;
/// tx.commit().await?;
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub struct Tx<'c> {
    // Field order matters: the transaction is dropped (and its rollback
    // queued) before the SQLite write gate opens.
    pub(crate) inner: TxInner<'c>,
    /// Named locks taken with `advisory_xact_lock` on MySQL and SQLite,
    /// released right after commit or rollback (dropped: closed, so freed).
    pub(crate) xact_locks: Vec<crate::AdvisoryLock>,
    /// The database this transaction came from, for dedicated lock sessions.
    pub(crate) db: crate::Db,
    _gate: Option<OwnedMutexGuard<()>>,
    /// Where this transaction's operations record (the `Db`'s metrics).
    pub(crate) metrics: Metrics,
    /// The `safesync.transaction` span; operations' spans are its children.
    pub(crate) span: tracing::Span,
    /// This transaction, among every transaction of the process.
    id: TxId,
}

/// Identifies one transaction among all of the process, for its whole life:
/// a [`Held`](crate::Held) row remembers the transaction that locked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxId(u64);

impl TxId {
    fn next() -> TxId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TxId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

impl<'c> Tx<'c> {
    pub(crate) fn new(
        inner: TxInner<'c>,
        db: crate::Db,
        gate: Option<OwnedMutexGuard<()>>,
        metrics: Metrics,
        span: tracing::Span,
    ) -> Self {
        Tx {
            inner,
            xact_locks: Vec::new(),
            db,
            _gate: gate,
            metrics,
            span,
            id: TxId::next(),
        }
    }

    /// This transaction's identity.
    pub(crate) fn id(&self) -> TxId {
        self.id
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        self.finish(true).await
    }

    /// Rolls the transaction back (dropping it does the same).
    pub async fn rollback(self) -> Result<()> {
        self.finish(false).await
    }

    /// Commits or rolls back, records the outcome on the span, then frees
    /// the transaction-scoped named locks.
    async fn finish(mut self, commit: bool) -> Result<()> {
        let span = self.span.clone();
        let xact_locks = std::mem::take(&mut self.xact_locks);
        let done = self.inner.finish(commit).instrument(span.clone()).await;
        let outcome = match (commit, done.is_ok()) {
            (true, true) => "committed",
            (true, false) => "commit_failed",
            (false, true) => "rolled_back",
            (false, false) => "rollback_failed",
        };
        span.record("outcome", outcome);
        crate::lock::release_all(xact_locks).await;
        Ok(done?)
    }

    /// The backend's SQL dialect.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    /// Runs SQL with no parameters (several statements allowed) inside this
    /// transaction; returns the rows affected. For DDL and fixed statements:
    /// values go to `?` placeholders through [`Tx::execute_with`], never
    /// into the text.
    pub async fn execute(&mut self, sql: &str) -> Result<u64> {
        use sqlx::Executor as _;
        Ok(on_tx!(self, |conn, DB| conn
            .execute(sqlx::raw_sql(sql))
            .await?
            .rows_affected()))
    }
}
