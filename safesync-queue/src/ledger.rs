//! The ledger: which entries a handler's transaction already committed.
//!
//! The worker inserts `(stream, group, entry id)` in the handler's own
//! transaction, before the handler runs. A redelivery of an entry whose
//! transaction committed but whose ack was lost finds the row and is only
//! acknowledged. Two workers on the same entry at once (one claimed it from
//! the other) serialise on the row: the second waits for the first to
//! commit, then skips.

use std::time::Duration;

use safesync_core::__private::ledger;
use safesync_core::{Db, Error, Result, Tx};

/// The ledger table's name.
pub const LEDGER_TABLE: &str = "safesync_queue_ledger";

/// Longest stream or group name the ledger stores (MySQL's key limit).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Creates the ledger table `safesync_queue_ledger` when it is missing.
///
/// [`Worker::run`](crate::Worker::run) calls it unless the ledger is off;
/// call it yourself to create the table with your migrations instead.
/// Columns: `stream`, `consumer_group`, `entry_id` (the primary key) and
/// `processed_at`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = safesync_core::Db::connect("sqlite::memory:").await?;
/// safesync_queue::ensure_ledger(&db).await?;
/// safesync_queue::ensure_ledger(&db).await?; // idempotent
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub async fn ensure_ledger(db: &Db) -> Result<()> {
    create_if_missing(db, ledger::ddl(db)).await
}

/// Runs `CREATE … IF NOT EXISTS` statement `ddl`, tolerating a process
/// that creates the same thing at the same moment.
pub(crate) async fn create_if_missing(db: &Db, ddl: &str) -> Result<()> {
    match db.execute(ddl).await {
        Ok(_) => Ok(()),
        // Two processes creating the table at once: on Postgres the loser
        // of the race gets a unique violation on the catalog. The table
        // exists now; a second try says so.
        Err(first) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            db.execute(ddl).await.map(|_| ()).map_err(|_| first)
        }
    }
}

/// Deletes ledger rows older than `older_than`; returns how many.
///
/// A pruned entry that is delivered again runs its handler again, so keep
/// rows for longer than an entry can stay pending (its claim idle time
/// times its maximum deliveries, plus any downtime of the workers).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
///
/// let db = safesync_core::Db::connect("sqlite::memory:").await?;
/// safesync_queue::ensure_ledger(&db).await?;
/// let deleted = safesync_queue::prune_ledger(&db, Duration::from_secs(7 * 24 * 3600)).await?;
/// assert_eq!(deleted, 0);
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub async fn prune_ledger(db: &Db, older_than: Duration) -> Result<u64> {
    let secs = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    db.execute_with(ledger::prune_sql(db), (secs,)).await
}

/// Inserts the ledger rows of several entries in `tx`, in one statement.
/// Any of them already present is an error (the caller rolls back and
/// handles each entry alone, where the ledger tells which it was).
pub(crate) async fn record_all(
    tx: &mut Tx<'_>,
    stream: &str,
    group: &str,
    ids: &[&str],
) -> Result<()> {
    let inserted = ledger::insert_all(tx, stream, group, ids).await?;
    if inserted == ids.len() as u64 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "the ledger took {inserted} of {} rows",
            ids.len()
        )))
    }
}
