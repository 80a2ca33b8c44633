//! The queue outbox's SQL on the `Db`'s backend, for safesync-queue (each
//! backend's spelling is in its backend file).

use crate::backend::{Backend, on_pool, on_tx};
use crate::db::Db;
use crate::error::Result;
use crate::tx::Tx;

/// One row of the outbox, as the relay claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The auto-increment id: the order of the stream's messages.
    pub id: i64,
    /// A random number drawn when the row was written, so that a dedup key
    /// stays unique even if ids were ever reused (a table re-created).
    pub nonce: i64,
    /// The message as JSON, as `Stream::send` puts it in `data`.
    pub payload: String,
}

/// The statements that create the outbox table `safesync_queue_outbox`
/// and its index when missing, for `db`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = safesync_core::Db::connect("sqlite::memory:").await?;
/// for ddl in safesync_core::__private::outbox::ddl(&db) {
///     db.execute(ddl).await?;
/// }
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub fn ddl(db: &Db) -> &'static [&'static str] {
    on_pool!(db.pool(), |_p, DB| <DB as Backend>::OUTBOX_DDL)
}

/// The streams with rows in the outbox.
pub async fn streams(db: &Db) -> Result<Vec<String>> {
    db.fetch_all(
        on_pool!(db.pool(), |_p, DB| <DB as Backend>::OUTBOX_STREAMS),
        (),
    )
    .await
}

/// Reads and locks (where the backend has row locks) the oldest `limit`
/// rows of `stream` in `tx`, skipping rows locked by other transactions,
/// in id order.
pub async fn claim(tx: &mut Tx<'_>, stream: &str, limit: i64) -> Result<Vec<OutboxRow>> {
    let rows: Vec<(i64, i64, String)> = on_tx!(tx, |conn, DB| {
        sqlx::query_as(<DB as Backend>::OUTBOX_CLAIM)
            .bind(stream)
            .bind(limit)
            .fetch_all(conn)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(id, nonce, payload)| OutboxRow { id, nonce, payload })
        .collect())
}
