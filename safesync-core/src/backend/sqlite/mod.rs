//! SQLite 3: backticks, `?` placeholders, no row locks (every transaction
//! is `BEGIN IMMEDIATE` behind this `Db`'s in-process write gate), file
//! locks for named locks.

mod schema;

use std::borrow::Cow;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Backend, DbErrorKind, Lexical, RowLocks, XactLock};
use crate::db::{Db, DbOptions};
use crate::error::{Error, LockWait, Result};
use crate::lock::{Held, file};
use crate::record::{Record, TableMeta};
use crate::schema::{ColumnType, LiveTable};
use crate::tx::Tx;

const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_CONSTRAINT_PRIMARYKEY: i64 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i64 = 2067;

/// This `Db`'s write gate: its transactions queue here for the database's
/// write lock, in order, instead of polling the busy handler.
pub(crate) type Gate = Arc<Mutex<()>>;

impl Backend for Sqlite {
    const DIALECT: super::Dialect = super::Dialect::Sqlite;

    // SQLite reads a double-quoted name that is not a column as a string
    // literal ("version" would silently become the text 'version'), so it
    // gets backticks, which are only ever identifiers.
    const QUOTE: char = '`';

    fn placeholder(out: &mut String, _n: usize) {
        out.push('?');
    }

    // Every safesync transaction on SQLite is BEGIN IMMEDIATE and holds the
    // database's write lock, so a plain SELECT inside it is already
    // exclusive.
    const ROW_LOCKS: Option<RowLocks> = None;
    const PROBE_SUFFIX: &'static str = "";
    const ERROR_ABORTS_TRANSACTION: bool = false;
    const ON_CONFLICT_DO_NOTHING: bool = true;

    fn classify(err: &(dyn DatabaseError + 'static)) -> Option<DbErrorKind> {
        err.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
        let code: i64 = err.code()?.parse().ok()?;
        match code {
            SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE => Some(DbErrorKind::Duplicate),
            // Extended codes keep the primary code in the low byte
            // (SQLITE_BUSY_SNAPSHOT = 517, SQLITE_LOCKED_SHAREDCACHE = 262, …).
            c if c & 0xff == SQLITE_BUSY || c & 0xff == SQLITE_LOCKED => Some(DbErrorKind::Busy),
            _ => None,
        }
    }

    async fn duplicate_of_key<T: Record>(
        _tx: &mut Tx<'_>,
        _record: &T,
        _err: &sqlx::Error,
    ) -> Result<bool> {
        // ON CONFLICT (key) DO NOTHING already absorbed a duplicate key:
        // this one is another unique index's.
        Ok(false)
    }

    type State = Gate;

    fn connect_options(
        url: &str,
        options: &DbOptions,
    ) -> std::result::Result<(SqliteConnectOptions, u32), sqlx::Error> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .busy_timeout(options.busy_timeout_value());
        if !memory {
            opts = opts.journal_mode(SqliteJournalMode::Wal);
        }
        // An in-memory database's connections would each see a database of
        // their own.
        Ok((opts, if memory { 1 } else { 4 }))
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn new_state() -> Gate {
        Arc::new(Mutex::new(()))
    }

    async fn write_gate(gate: &Gate, timeout: Duration) -> Result<Option<OwnedMutexGuard<()>>> {
        match tokio::time::timeout(timeout, Arc::clone(gate).lock_owned()).await {
            Ok(guard) => Ok(Some(guard)),
            Err(_) => Err(Error::LockTimeout {
                name: "SQLite write lock".to_owned(),
                waited: timeout,
                what: LockWait::WriteLock,
            }),
        }
    }

    fn begin_sql(_lock_timeout: Duration) -> Cow<'static, str> {
        Cow::Borrowed("BEGIN IMMEDIATE")
    }

    async fn lock_named(
        _db: &Db,
        pool: &sqlx::SqlitePool,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Held>> {
        let opts = pool.connect_options();
        let path = opts.get_filename();
        let memory =
            path.as_os_str().to_string_lossy().contains("memory") || path.as_os_str() == ":memory:";
        // The lock file sits beside the database file as the OS resolves
        // it, so every process reaching the database by any path (a
        // symlink, `./`, `..`) locks the same file; SQLite itself resolves
        // symlinks for its journal and WAL the same way.
        let path =
            (!memory).then(|| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(file::lock(path, name, timeout)
            .await?
            .map(|session| Held { session, id: None }))
    }

    async fn lock_xact(
        _conn: &mut SqliteConnection,
        _name: &str,
        _timeout: Duration,
    ) -> Result<XactLock> {
        Ok(XactLock::UseSession)
    }

    const FENCE_DDL: &'static str = "CREATE TABLE IF NOT EXISTS safesync_fence (
    name TEXT NOT NULL PRIMARY KEY,
    token INTEGER NOT NULL
)";

    fn fence_key(name: &str) -> Cow<'_, str> {
        Cow::Borrowed(name)
    }

    async fn fence_next(conn: &mut SqliteConnection, key: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO safesync_fence (name, token) VALUES (?, 1) \
             ON CONFLICT (name) DO UPDATE SET token = token + 1 RETURNING token",
        )
        .bind(key)
        .fetch_one(conn)
        .await?)
    }

    // Every safesync transaction on SQLite is BEGIN IMMEDIATE: it holds the
    // database's write lock from its start, so no increment (a write) can
    // commit until it ends, in this process or any other.
    async fn fence_current(conn: &mut SqliteConnection, key: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT token FROM safesync_fence WHERE name = ?")
                .bind(key)
                .fetch_optional(conn)
                .await?,
        )
    }

    const LEDGER_DDL: &'static str = "CREATE TABLE IF NOT EXISTS safesync_queue_ledger (
    stream TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    processed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (stream, consumer_group, entry_id)
)";

    const LEDGER_PRUNE: &'static str = "DELETE FROM safesync_queue_ledger \
         WHERE processed_at < datetime('now', '-' || ? || ' seconds')";

    async fn ledger_insert(
        conn: &mut SqliteConnection,
        stream: &str,
        group: &str,
        id: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
             VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(stream)
        .bind(group)
        .bind(id)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    fn ledger_begin_sql(_: Duration, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }

    async fn ledger_insert_all(
        conn: &mut SqliteConnection,
        stream: &str,
        group: &str,
        ids: &[&str],
    ) -> Result<u64> {
        let sql = super::ledger_values(ids.len());
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(stream).bind(group).bind(*id);
        }
        Ok(q.execute(conn).await?.rows_affected())
    }

    const OUTBOX_DDL: &'static [&'static str] = &[
        "CREATE TABLE IF NOT EXISTS safesync_queue_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)",
        "CREATE INDEX IF NOT EXISTS safesync_queue_outbox_stream \
         ON safesync_queue_outbox (stream, id)",
    ];

    // No row locks: the transaction's `BEGIN IMMEDIATE` already excludes
    // every other writer, so relays take turns.
    const OUTBOX_CLAIM: &'static str = "SELECT id, nonce, payload FROM safesync_queue_outbox \
         WHERE stream = ? ORDER BY id LIMIT ?";

    const OUTBOX_STREAMS: &'static str = "SELECT DISTINCT stream FROM safesync_queue_outbox";

    const LEXICAL: Lexical = Lexical {
        numbered: false,
        mysql_comments_and_escapes: false,
        bracket_identifiers: true,
    };
    const MAX_PARAMS: usize = 32_766;

    const CASE_SENSITIVE_NAMES: bool = false;
    const TABLE_OPTIONS: &'static str = "";

    fn ddl_type(ty: ColumnType, _in_key: bool) -> &'static str {
        schema::ddl_type(ty)
    }

    fn holds(ty: ColumnType, sql_type: &str) -> bool {
        schema::holds(ty, sql_type)
    }

    async fn live_table(pool: &sqlx::Pool<Sqlite>, meta: &TableMeta) -> Result<Option<LiveTable>> {
        schema::live_table(pool, meta).await
    }
}

super::accessors!(
    Sqlite,
    "SQLite",
    sqlx::SqlitePool,
    sqlx::SqliteConnection,
    from_sqlite_pool,
    as_sqlite,
    "Its transactions become `BEGIN IMMEDIATE`; the lock timeout bounds the wait for the write lock."
);

#[cfg(test)]
mod sql_tests {
    use crate::sql::statements;
    use crate::sql::tests::META;

    #[test]
    fn sqlite_never_uses_insert_or_ignore() {
        let s = statements::<sqlx::Sqlite>(&META);
        assert!(!s.insert_idempotent.contains("IGNORE"));
        assert!(
            s.insert_idempotent
                .ends_with("ON CONFLICT (`id`) DO NOTHING")
        );
        assert!(!s.lock.contains("FOR UPDATE"));
    }
}
