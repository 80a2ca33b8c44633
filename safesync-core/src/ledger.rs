//! The queue ledger's SQL on the `Db`'s backend, for safesync-queue (each
//! backend's spelling is in its backend file).

use futures_core::future::BoxFuture;
use tracing::Instrument as _;

use crate::backend::tx_conn::OwnTx;
use crate::backend::{Backend, TxInner, on_pool, on_tx};
use crate::db::{Attempts, Db, run_in};
use crate::error::Result;
use crate::retry::RetryPolicy;
use crate::tx::Tx;

/// `CREATE TABLE IF NOT EXISTS safesync_queue_ledger …` for `db`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = safesync_core::Db::connect("sqlite::memory:").await?;
/// db.execute(safesync_core::__private::ledger::ddl(&db)).await?;
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub fn ddl(db: &Db) -> &'static str {
    on_pool!(db.pool(), |_p, DB| <DB as Backend>::LEDGER_DDL)
}

/// Deletes the ledger rows older than its one bound value, in seconds (an
/// `i64`): `db.execute_with(prune_sql(&db), (secs,))`.
pub fn prune_sql(db: &Db) -> &'static str {
    on_pool!(db.pool(), |_p, DB| <DB as Backend>::LEDGER_PRUNE)
}

/// Inserts one ledger row in `tx`; `Ok(false)` when it was there already.
pub async fn insert(tx: &mut Tx<'_>, stream: &str, group: &str, id: &str) -> Result<bool> {
    on_tx!(tx, |conn, DB| {
        <DB as Backend>::ledger_insert(conn, stream, group, id).await
    })
}

/// Inserts several ledger rows in `tx` in one statement; returns how many.
pub async fn insert_all(tx: &mut Tx<'_>, stream: &str, group: &str, ids: &[&str]) -> Result<u64> {
    on_tx!(tx, |conn, DB| {
        <DB as Backend>::ledger_insert_all(conn, stream, group, ids).await
    })
}

/// One ledger row: entry `id` of `stream`, handled in `group`.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The stream key.
    pub stream: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// The entry id.
    pub id: &'a str,
}

/// Whether `s` can go into SQL text as a `'…'` literal on every backend
/// and in every SQL mode: no quote, no backslash, no control character.
pub(crate) fn literal_safe(s: &str) -> bool {
    !s.chars().any(|c| c == '\'' || c == '\\' || c.is_control())
}

/// Runs `f` in a new transaction that first inserts the ledger row `row`,
/// retried under `policy` as [`Db::retry`] retries: every attempt is a new
/// transaction that inserts the row again. `Ok(None)` when the row was
/// there already (a committed transaction handled the entry): `f` did not
/// run in that attempt, and nothing was written.
///
/// On PostgreSQL and MySQL/MariaDB the row is inserted in the same round
/// trip as `BEGIN` when the names and id can be SQL literals
/// (no quote, backslash or control character), so the ledger costs no round trip of its own; when
/// that combined begin fails (the row is there, a lock wait, a broken
/// connection), its connection is closed — it may hold a transaction — and
/// the attempt runs the ordinary way (`BEGIN`, then the insert), which tells
/// a duplicate from an error.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use safesync_core::__private::ledger::{Row, ddl, retry_recorded};
/// use safesync_core::{Db, RetryPolicy};
///
/// let db = Db::connect("sqlite::memory:").await?;
/// db.execute(ddl(&db)).await?;
/// let row = Row { stream: "orders", group: "billing", id: "1-0" };
/// let policy = RetryPolicy::default();
/// let ran = retry_recorded(&db, policy, row, |tx| Box::pin(async move { tx.execute("SELECT 1").await }));
/// assert!(ran.await?.is_some());
/// let again = retry_recorded(&db, policy, row, |tx| Box::pin(async move { tx.execute("SELECT 1").await }));
/// assert!(again.await?.is_none(), "the row is there: the closure does not run");
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub async fn retry_recorded<'a, T, F>(
    db: &Db,
    policy: RetryPolicy,
    row: Row<'_>,
    mut f: F,
) -> Result<Option<T>>
where
    F: for<'t> FnMut(&'t mut Tx<'a>) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let mut attempts = Attempts::new(db, policy);
    loop {
        let span = attempts.start();
        match attempt(db, row, &mut f).instrument(span).await {
            Ok(v) => return Ok(v),
            Err(e) => attempts.failed(e).await?,
        }
    }
}

/// One attempt of [`retry_recorded`].
async fn attempt<'a, T, F>(db: &Db, row: Row<'_>, f: &mut F) -> Result<Option<T>>
where
    F: for<'t> FnMut(&'t mut Tx<'a>) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let sql = [row.stream, row.group, row.id]
        .into_iter()
        .all(literal_safe)
        .then(|| {
            on_pool!(db.pool(), |_p, DB| <DB as Backend>::ledger_begin_sql(
                db.lock_timeout(),
                row.stream,
                row.group,
                row.id
            ))
        })
        .flatten();
    if let Some(sql) = sql {
        let span = db.tx_span();
        let begun: Option<Tx<'static>> = on_pool!(db.pool(), |p, DB| {
            let mut conn = p.pool.acquire().instrument(span.clone()).await?;
            let raw: &mut <DB as sqlx::Database>::Connection = &mut conn;
            let done = sqlx::Executor::execute(raw, sqlx::raw_sql(&sql))
                .instrument(span.clone())
                .await;
            if done.is_ok() {
                Some(Tx::new(
                    TxInner::from(OwnTx::begun(conn)),
                    db.clone(),
                    None,
                    db.metrics().clone(),
                    span,
                ))
            } else {
                // MySQL leaves the transaction of a failed insert open:
                // this connection must not serve anyone again.
                conn.close_on_drop();
                None
            }
        });
        let combined = match begun {
            Some(tx) => Some(run_in(tx, &mut *f).await),
            None => None,
        };
        if let Some(done) = combined {
            return done.map(Some);
        }
    }
    let mut tx = db.begin().await?;
    if !insert(&mut tx, row.stream, row.group, row.id).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    run_in(tx, &mut *f).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::literal_safe;

    #[test]
    fn only_plain_text_goes_into_sql_literals() {
        assert!(literal_safe("orders"));
        assert!(literal_safe("{tenant}:orders.v2-é"));
        assert!(literal_safe("1700000000000-0"));
        assert!(!literal_safe("o'rders"));
        assert!(!literal_safe("back\\slash"));
        assert!(!literal_safe("nul\0"));
        assert!(!literal_safe("line\nbreak"));
    }
}
