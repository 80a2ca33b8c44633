//! The ledger: which entries a handler's transaction already committed.
//!
//! The worker inserts `(stream, group, entry id)` in the handler's own
//! transaction, before the handler runs. A redelivery of an entry whose
//! transaction committed but whose ack was lost finds the row and is only
//! acknowledged. Two workers on the same entry at once (one claimed it from
//! the other) serialise on the row: the second waits for the first to
//! commit, then skips.

use std::time::Duration;

use safesync_core::{Db, Dialect, Error, Result, Tx};

/// The ledger table's name.
pub const LEDGER_TABLE: &str = "safesync_queue_ledger";

const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS safesync_queue_ledger (
    stream TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    processed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (stream, consumer_group, entry_id)
)";

// 255 + 255 + 41 characters of utf8mb4 stay under InnoDB's 3072-byte key.
const MYSQL_DDL: &str = "CREATE TABLE IF NOT EXISTS safesync_queue_ledger (
    stream VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    consumer_group VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    entry_id VARCHAR(41) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    processed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (stream, consumer_group, entry_id)
) ENGINE = InnoDB";

const POSTGRES_DDL: &str = "CREATE TABLE IF NOT EXISTS safesync_queue_ledger (
    stream TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, consumer_group, entry_id)
)";

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
    let ddl = match db.dialect() {
        Dialect::Sqlite => SQLITE_DDL,
        Dialect::MySql => MYSQL_DDL,
        Dialect::Postgres => POSTGRES_DDL,
        other => return Err(unsupported(other)),
    };
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
    match db.dialect() {
        Dialect::Sqlite => {
            let modifier = format!("-{secs} seconds");
            db.execute_with(
                "DELETE FROM safesync_queue_ledger WHERE processed_at < datetime('now', ?)",
                (modifier,),
            )
            .await
        }
        Dialect::MySql => {
            db.execute_with(
                "DELETE FROM safesync_queue_ledger WHERE processed_at < NOW(6) - INTERVAL ? SECOND",
                (secs,),
            )
            .await
        }
        Dialect::Postgres => {
            db.execute_with(
                "DELETE FROM safesync_queue_ledger WHERE processed_at < now() - ? * interval '1 second'",
                (secs,),
            )
            .await
        }
        other => Err(unsupported(other)),
    }
}

fn unsupported(dialect: Dialect) -> Error {
    Error::Config(format!(
        "the queue ledger does not support the {dialect:?} backend; turn it off with `Worker::ledger(false)`"
    ))
}

/// What [`record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The entry is new: run the handler.
    New,
    /// A committed transaction already handled the entry.
    AlreadyProcessed,
}

/// Inserts the entry's ledger row in `tx`.
pub(crate) async fn record(
    tx: &mut Tx<'_>,
    stream: &str,
    group: &str,
    id: &str,
) -> Result<Recorded> {
    let missing = |backend: &str| {
        Error::Config(format!(
            "the queue ledger on {backend} needs the `{backend}` feature of safesync-queue"
        ))
    };
    match tx.dialect() {
        Dialect::Sqlite => {
            #[cfg(feature = "sqlite")]
            if let Some(conn) = tx.as_sqlite() {
                let done = sqlx::query(
                    "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
                     VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(stream)
                .bind(group)
                .bind(id)
                .execute(conn)
                .await?;
                return Ok(new_if(done.rows_affected()));
            }
            Err(missing("sqlite"))
        }
        Dialect::MySql => {
            // A plain INSERT whose duplicate-key error (1062) is the answer:
            // `INSERT IGNORE` would also swallow every other error.
            #[cfg(feature = "mysql")]
            if let Some(conn) = tx.as_mysql() {
                let done = sqlx::query(
                    "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
                     VALUES (?, ?, ?)",
                )
                .bind(stream)
                .bind(group)
                .bind(id)
                .execute(conn)
                .await;
                return match done {
                    Ok(done) => Ok(new_if(done.rows_affected())),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        Ok(Recorded::AlreadyProcessed)
                    }
                    Err(e) => Err(e.into()),
                };
            }
            Err(missing("mysql"))
        }
        Dialect::Postgres => {
            #[cfg(feature = "postgres")]
            if let Some(conn) = tx.as_postgres() {
                let done = sqlx::query(
                    "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(stream)
                .bind(group)
                .bind(id)
                .execute(conn)
                .await?;
                return Ok(new_if(done.rows_affected()));
            }
            Err(missing("postgres"))
        }
        other => Err(unsupported(other)),
    }
}

/// Inserts the ledger rows of several entries in `tx`, in one statement.
/// Any of them already present is an error (the caller rolls back and
/// handles each entry alone, where [`record`] tells which it was).
pub(crate) async fn record_all(
    tx: &mut Tx<'_>,
    stream: &str,
    group: &str,
    ids: &[&str],
) -> Result<()> {
    // `INSERT … VALUES (?, ?, ?), …` on SQLite and MySQL.
    #[allow(unused_macros)] // reason: unused when neither backend is on
    macro_rules! insert_values {
        ($conn:expr) => {{
            let sql = insert_values(ids.len());
            let mut q = sqlx::query(&sql);
            for id in ids {
                q = q.bind(stream).bind(group).bind(*id);
            }
            q.execute($conn).await?.rows_affected()
        }};
    }
    let inserted = 'done: {
        #[cfg(feature = "sqlite")]
        if let Some(conn) = tx.as_sqlite() {
            break 'done insert_values!(conn);
        }
        #[cfg(feature = "mysql")]
        if let Some(conn) = tx.as_mysql() {
            break 'done insert_values!(conn);
        }
        #[cfg(feature = "postgres")]
        if let Some(conn) = tx.as_postgres() {
            break 'done sqlx::query(
                "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
                 SELECT $1, $2, unnest($3::text[])",
            )
            .bind(stream)
            .bind(group)
            .bind(ids)
            .execute(conn)
            .await?
            .rows_affected();
        }
        return Err(unsupported(tx.dialect()));
    };
    if inserted == ids.len() as u64 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "the ledger took {inserted} of {} rows",
            ids.len()
        )))
    }
}

/// `INSERT … VALUES (?, ?, ?), …` for `rows` ledger rows.
#[allow(dead_code)] // reason: unused when no backend feature of this crate is on
fn insert_values(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) VALUES (?, ?, ?)",
    );
    for _ in 1..rows {
        sql.push_str(", (?, ?, ?)");
    }
    sql
}

#[allow(dead_code)] // reason: unused when no backend feature of this crate is on
fn new_if(rows: u64) -> Recorded {
    if rows == 1 {
        Recorded::New
    } else {
        Recorded::AlreadyProcessed
    }
}
