//! The transactional outbox: messages written in the producer's own
//! transaction ([`Stream::send_in`](crate::Stream::send_in)) and forwarded
//! to Redis by a [`Relay`](crate::Relay) once that transaction committed.

use safesync_core::__private::outbox;
use safesync_core::{Db, Error, Result, Tx};

use crate::ledger::{MAX_NAME_LEN, create_if_missing};

/// The outbox table's name.
pub const OUTBOX_TABLE: &str = "safesync_queue_outbox";

/// The PostgreSQL channel on which [`Stream::send_in`](crate::Stream::send_in)
/// notifies (`pg_notify(channel, stream)`, delivered when its transaction
/// commits) and on which a [`Relay`](crate::Relay) listens, to wake at
/// once instead of at its next poll. It is one channel per database: any
/// `send_in` of the database (of any schema) wakes every relay of it, which
/// then makes one pass.
///
/// ```
/// assert_eq!(safesync_queue::OUTBOX_CHANNEL, "safesync_queue_outbox");
/// ```
pub const OUTBOX_CHANNEL: &str = "safesync_queue_outbox";

/// Creates the outbox table `safesync_queue_outbox` (and its index on
/// `(stream, id)`) when it is missing.
///
/// [`Relay::run`](crate::Relay::run) calls it; call it yourself before
/// the first [`Stream::send_in`](crate::Stream::send_in) when producers
/// may start before any relay, or create the table with your migrations.
/// Columns: `id` (auto-increment, the order of a stream's messages),
/// `stream`, `nonce`, `payload` (the JSON of the entry's `data`) and
/// `created_at`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = safesync_core::Db::connect("sqlite::memory:").await?;
/// safesync_queue::ensure_outbox(&db).await?;
/// safesync_queue::ensure_outbox(&db).await?; // idempotent
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub async fn ensure_outbox(db: &Db) -> Result<()> {
    for ddl in outbox::ddl(db) {
        create_if_missing(db, ddl).await?;
    }
    Ok(())
}

/// Writes one message of `stream` to the outbox in `tx`.
pub(crate) async fn insert(tx: &mut Tx<'_>, stream: &str, json: &str) -> Result<()> {
    if stream.len() > MAX_NAME_LEN {
        return Err(Error::Config(format!(
            "stream name `{stream}` is {} bytes; the outbox keeps names of at most {MAX_NAME_LEN}",
            stream.len()
        )));
    }
    let nonce = fastrand::i64(..);
    tx.execute_with(
        "INSERT INTO safesync_queue_outbox (stream, nonce, payload) VALUES (?, ?, ?)",
        (stream, nonce, json),
    )
    .await?;
    notify(tx, stream).await
}

/// On PostgreSQL, `pg_notify(OUTBOX_CHANNEL, stream)` in `tx`: delivered
/// to the listening relays when `tx` commits, never when it rolls back
/// (several of one transaction with the same stream arrive as one).
/// Nothing on the other backends, whose relays poll.
async fn notify(tx: &mut Tx<'_>, stream: &str) -> Result<()> {
    #[cfg(feature = "postgres")]
    if let Some(conn) = tx.as_postgres() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(OUTBOX_CHANNEL)
            .bind(stream)
            .execute(conn)
            .await?;
    }
    #[cfg(not(feature = "postgres"))]
    let _ = (tx, stream);
    Ok(())
}
