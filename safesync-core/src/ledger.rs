//! The queue ledger's SQL on the `Db`'s backend, for safesync-queue (each
//! backend's spelling is in its backend file).

use crate::backend::{Backend, on_pool, on_tx};
use crate::db::Db;
use crate::error::Result;
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
