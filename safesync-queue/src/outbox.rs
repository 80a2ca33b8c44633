//! The transactional outbox: messages written in the producer's own
//! transaction ([`Stream::send_in`](crate::Stream::send_in)) and forwarded
//! to Redis by a [`Relay`](crate::Relay) once that transaction committed.

use safesync_core::__private::outbox;
use safesync_core::{Db, Error, Result, Tx};

use crate::ledger::{MAX_NAME_LEN, create_if_missing};

/// The outbox table's name.
pub const OUTBOX_TABLE: &str = "safesync_queue_outbox";

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
    Ok(())
}
