//! MySQL and MariaDB (tested: MariaDB 10.11; MySQL 8 untested, handled by
//! its error numbers and messages): backticks, `?` placeholders, `FOR UPDATE`
//! row locks bounded by `innodb_lock_wait_timeout`, `GET_LOCK` named locks
//! on dedicated connections, and a plain `INSERT` for the idempotent insert
//! (MySQL has no conflict target).

mod schema;

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::future::BoxFuture;
use sqlx::error::DatabaseError;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError};
use sqlx::{MySql, MySqlConnection};
use tokio::sync::OwnedMutexGuard;

use super::{Backend, BackendPool, DbErrorKind, Lexical, Pool, RowLocks, XactLock};
use crate::db::{Db, DbOptions};
use crate::error::{Error, Result};
use crate::lock::{Held, LockSession, SpareConns, advisory_key};
use crate::record::{Record, TableMeta};
use crate::schema::{ColumnType, LiveTable};
use crate::tx::Tx;

/// `ER_DUP_ENTRY`
const DUP_ENTRY: u16 = 1062;
/// `ER_LOCK_WAIT_TIMEOUT`; also what MariaDB answers for a failed `NOWAIT`.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`
const DEADLOCK: u16 = 1213;
/// `ER_LOCK_NOWAIT` (MySQL 8)
const LOCK_NOWAIT: u16 = 3572;

/// Per (schema, table), whether the primary key is exactly the record's
/// key, so that a duplicate on `PRIMARY` needs no probe.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrimaryKeys(Arc<Mutex<HashMap<TableName, bool>>>);

/// A table's optional schema and its name.
type TableName = (Option<&'static str>, &'static str);

impl PrimaryKeys {
    fn get(&self, schema: Option<&'static str>, table: &'static str) -> Option<bool> {
        self.0.lock().ok()?.get(&(schema, table)).copied()
    }

    fn set(&self, schema: Option<&'static str>, table: &'static str, same: bool) {
        if let Ok(mut map) = self.0.lock() {
            map.insert((schema, table), same);
        }
    }
}

impl Backend for MySql {
    const DIALECT: super::Dialect = super::Dialect::MySql;
    const QUOTE: char = '`';

    fn placeholder(out: &mut String, _n: usize) {
        out.push('?');
    }

    const ROW_LOCKS: Option<RowLocks> = Some(RowLocks {
        wait: " FOR UPDATE",
        nowait: " FOR UPDATE NOWAIT",
        skip_locked: " FOR UPDATE SKIP LOCKED",
    });
    // REPEATABLE READ would answer a plain read from the transaction's old
    // snapshot: the probe must be a current (locking) read.
    const PROBE_SUFFIX: &'static str = " LOCK IN SHARE MODE";
    const ERROR_ABORTS_TRANSACTION: bool = false;
    const ON_CONFLICT_DO_NOTHING: bool = false;

    fn classify(err: &(dyn DatabaseError + 'static)) -> Option<DbErrorKind> {
        match err.try_downcast_ref::<MySqlDatabaseError>()?.number() {
            DUP_ENTRY => Some(DbErrorKind::Duplicate),
            DEADLOCK => Some(DbErrorKind::Deadlock),
            LOCK_WAIT_TIMEOUT | LOCK_NOWAIT => Some(DbErrorKind::LockWaitTimeout),
            _ => None,
        }
    }

    async fn duplicate_of_key<T: Record>(
        tx: &mut Tx<'_>,
        record: &T,
        err: &sqlx::Error,
    ) -> Result<bool> {
        // A duplicate on PRIMARY, when the primary key is exactly the
        // record's key, is this key: no probe needed. Otherwise only a row
        // with this key makes it one.
        let on_primary = err
            .as_database_error()
            .and_then(|d| duplicate_key_name(d.message()))
            == Some("PRIMARY");
        Ok((on_primary && key_is_primary::<T>(tx).await?)
            || crate::ops::probe(tx, record).await?.is_some())
    }

    type State = PrimaryKeys;

    fn connect_options(
        url: &str,
        _options: &DbOptions,
    ) -> std::result::Result<(MySqlConnectOptions, u32), sqlx::Error> {
        let fixed = url.replacen("mariadb:", "mysql:", 1);
        Ok((MySqlConnectOptions::from_str(&fixed)?, 10))
    }

    fn rows_affected(done: &sqlx::mysql::MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn new_state() -> PrimaryKeys {
        PrimaryKeys::default()
    }

    async fn write_gate(
        _state: &PrimaryKeys,
        _timeout: Duration,
    ) -> Result<Option<OwnedMutexGuard<()>>> {
        Ok(None)
    }

    /// `innodb_lock_wait_timeout` is whole seconds (rounded up, at least 1)
    /// and has no transaction-local form: it is set on the session in the
    /// same round trip as `BEGIN`.
    fn begin_sql(lock_timeout: Duration) -> Cow<'static, str> {
        let secs = lock_timeout.as_secs() + u64::from(lock_timeout.subsec_nanos() > 0);
        Cow::Owned(format!(
            "SET SESSION innodb_lock_wait_timeout = {}; BEGIN",
            secs.max(1)
        ))
    }

    async fn lock_named(
        db: &Db,
        pool: &sqlx::MySqlPool,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Held>> {
        let lock_name = lock_name(name);
        let mut spare = db.lock_conns().take::<KeptConn>();
        loop {
            let reused = spare.is_some();
            let KeptConn { mut conn, id } = if let Some(kept) = spare.take() {
                kept
            } else {
                let mut conn: MySqlConnection =
                    sqlx::ConnectOptions::connect(&*pool.connect_options()).await?;
                let id: i64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
                    .fetch_one(&mut conn)
                    .await?;
                KeptConn { conn, id }
            };
            let got: std::result::Result<Option<i64>, sqlx::Error> =
                sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
                    .bind(lock_name.as_str())
                    .bind(timeout.as_secs_f64())
                    .fetch_one(&mut conn)
                    .await;
            return match got {
                // A kept connection may have died while idle (server
                // restart, wait_timeout, KILL): try a new one.
                Err(e) if reused => {
                    tracing::debug!(error = %e, "a kept lock connection failed; opening a new one");
                    continue;
                }
                Err(e) => Err(e.into()),
                Ok(Some(1)) => Ok(Some(Held {
                    session: Box::new(Session {
                        kept: KeptConn { conn, id },
                        name: lock_name,
                    }),
                    id: Some(id),
                })),
                Ok(Some(_)) => {
                    db.lock_conns().put(KeptConn { conn, id });
                    Ok(None)
                }
                Ok(None) => Err(Error::Config(format!(
                    "GET_LOCK('{lock_name}') returned NULL: the server could not take the lock"
                ))),
            };
        }
    }

    async fn lock_xact(
        _conn: &mut MySqlConnection,
        _name: &str,
        _timeout: Duration,
    ) -> Result<XactLock> {
        Ok(XactLock::UseSession)
    }

    // The key is the name GET_LOCK sees (`lock_name`: at most 64 bytes,
    // compared byte for byte as MariaDB 10.11 compares lock names).
    const FENCE_DDL: &'static str = "CREATE TABLE IF NOT EXISTS safesync_fence (
    name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    token BIGINT NOT NULL
) ENGINE = InnoDB";

    fn fence_key(name: &str) -> Cow<'_, str> {
        Cow::Owned(lock_name(name))
    }

    async fn fence_next(conn: &mut MySqlConnection, key: &str) -> Result<i64> {
        sqlx::query(
            "INSERT INTO safesync_fence (name, token) VALUES (?, 1) \
             ON DUPLICATE KEY UPDATE token = token + 1",
        )
        .bind(key)
        .execute(&mut *conn)
        .await?;
        // A current read of the row this transaction just locked.
        Ok(
            sqlx::query_scalar("SELECT token FROM safesync_fence WHERE name = ? FOR UPDATE")
                .bind(key)
                .fetch_one(conn)
                .await?,
        )
    }

    // A locking read: the current token (not the transaction's snapshot),
    // and a shared lock that makes the increment wait until this
    // transaction ends.
    async fn fence_current(conn: &mut MySqlConnection, key: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar(
                "SELECT token FROM safesync_fence WHERE name = ? LOCK IN SHARE MODE",
            )
            .bind(key)
            .fetch_optional(conn)
            .await?,
        )
    }

    // 255 + 255 + 41 characters of utf8mb4 stay under InnoDB's 3072-byte key.
    const LEDGER_DDL: &'static str = "CREATE TABLE IF NOT EXISTS safesync_queue_ledger (
    stream VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    consumer_group VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    entry_id VARCHAR(41) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    processed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (stream, consumer_group, entry_id)
) ENGINE = InnoDB";

    const LEDGER_PRUNE: &'static str =
        "DELETE FROM safesync_queue_ledger WHERE processed_at < NOW(6) - INTERVAL ? SECOND";

    async fn ledger_insert(
        conn: &mut MySqlConnection,
        stream: &str,
        group: &str,
        id: &str,
    ) -> Result<bool> {
        // A plain INSERT whose duplicate-key error (1062) is the answer:
        // `INSERT IGNORE` would also swallow every other error.
        let done = sqlx::query(
            "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
             VALUES (?, ?, ?)",
        )
        .bind(stream)
        .bind(group)
        .bind(id)
        .execute(conn)
        .await;
        match done {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A duplicate fails the `INSERT` with the transaction still open on
    /// the server: the caller closes that connection.
    fn ledger_begin_sql(
        lock_timeout: Duration,
        stream: &str,
        group: &str,
        id: &str,
    ) -> Option<String> {
        Some(format!(
            "{}; {}",
            MySql::begin_sql(lock_timeout),
            super::ledger_insert_literal(stream, group, id)
        ))
    }

    async fn ledger_insert_all(
        conn: &mut MySqlConnection,
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

    const OUTBOX_DDL: &'static [&'static str] =
        &["CREATE TABLE IF NOT EXISTS safesync_queue_outbox (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    stream VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    nonce BIGINT NOT NULL,
    payload LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY safesync_queue_outbox_stream (stream, id)
) ENGINE = InnoDB"];

    const OUTBOX_CLAIM: &'static str = "SELECT id, nonce, payload FROM safesync_queue_outbox \
         WHERE stream = ? ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED";

    // The column's binary collation (exact comparison) makes sqlx read it
    // as bytes: converted, it reads as text.
    const OUTBOX_STREAMS: &'static str =
        "SELECT DISTINCT CONVERT(stream USING utf8mb4) FROM safesync_queue_outbox";

    const LEXICAL: Lexical = Lexical {
        numbered: false,
        mysql_comments_and_escapes: true,
        bracket_identifiers: false,
    };
    const MAX_PARAMS: usize = 65_535;

    const CASE_SENSITIVE_NAMES: bool = false;
    const TABLE_OPTIONS: &'static str = schema::TABLE_OPTIONS;

    fn ddl_type(ty: ColumnType, in_key: bool) -> &'static str {
        schema::ddl_type(ty, in_key)
    }

    fn holds(ty: ColumnType, sql_type: &str) -> bool {
        schema::holds(ty, sql_type)
    }

    async fn live_table(pool: &sqlx::Pool<MySql>, meta: &TableMeta) -> Result<Option<LiveTable>> {
        schema::live_table(pool, meta).await
    }
}

/// The index an `ER_DUP_ENTRY` message names: `PRIMARY` in MariaDB's
/// "Duplicate entry '7' for key 'PRIMARY'" and in MySQL 8's "… for key
/// 'accounts.PRIMARY'".
fn duplicate_key_name(message: &str) -> Option<&str> {
    let (_, rest) = message.rsplit_once(" for key '")?;
    let name = rest.strip_suffix('\'')?;
    Some(name.rsplit_once('.').map_or(name, |(_, index)| index))
}

/// Whether the table's primary key is exactly the record's key columns.
/// Read once per `Db` and table from `information_schema`.
async fn key_is_primary<T: Record>(tx: &mut Tx<'_>) -> Result<bool> {
    let meta = T::META;
    #[allow(irrefutable_let_patterns)] // reason: the only variant when MySQL is the only backend
    let Pool::MySql(BackendPool { state: cache, .. }) = tx.db.pool() else {
        return Ok(false);
    };
    let cache = cache.clone();
    if let Some(known) = cache.get(meta.schema, meta.table) {
        return Ok(known);
    }
    let Some(conn) = tx.as_mysql() else {
        return Ok(false);
    };
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
         AND CONSTRAINT_NAME = 'PRIMARY'",
    )
    .bind(meta.schema)
    .bind(meta.table)
    .fetch_all(conn)
    .await?;
    let mut key: Vec<String> = meta
        .key
        .iter()
        .map(|&i| meta.columns[i].to_ascii_lowercase())
        .collect();
    let mut primary: Vec<String> = columns.iter().map(|c| c.to_ascii_lowercase()).collect();
    key.sort();
    primary.sort();
    let same = !key.is_empty() && key == primary;
    cache.set(meta.schema, meta.table, same);
    Ok(same)
}

/// The name MySQL sees: itself up to 64 bytes, else a hash of it.
pub(crate) fn lock_name(name: &str) -> String {
    if name.len() <= 64 {
        name.to_owned()
    } else {
        format!("safesync:{:016x}", advisory_key(name))
    }
}

/// A dedicated named-lock connection with its `CONNECTION_ID()`.
struct KeptConn {
    conn: MySqlConnection,
    id: i64,
}

/// A `GET_LOCK` held on a dedicated connection.
struct Session {
    kept: KeptConn,
    name: String,
}

impl LockSession for Session {
    fn check(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let r: std::result::Result<Option<i64>, _> =
                sqlx::query_scalar("SELECT IS_USED_LOCK(?) = CONNECTION_ID()")
                    .bind(self.name.as_str())
                    .fetch_one(&mut self.kept.conn)
                    .await;
            matches!(r, Ok(Some(1)))
        })
    }

    fn release(self: Box<Self>, spare: &SpareConns) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let Session { mut kept, name } = *self;
            let r: Option<i64> = sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
                .bind(name.as_str())
                .fetch_one(&mut kept.conn)
                .await?;
            if r == Some(1) {
                spare.put(kept);
                Ok(true)
            } else {
                let _ = sqlx::Connection::close(kept.conn).await;
                Ok(false)
            }
        })
    }

    fn can_be_lost(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "mysql_get_lock"
    }
}

super::accessors!(
    MySql,
    "MySQL/MariaDB",
    sqlx::MySqlPool,
    sqlx::MySqlConnection,
    from_mysql_pool,
    as_mysql,
    "Each transaction sets it on its session (`innodb_lock_wait_timeout`) in the same round trip as its `BEGIN`; the setting stays on the pool's connection afterwards."
);

#[cfg(test)]
mod tests {
    use super::{Backend as _, MySql, duplicate_key_name};
    use crate::sql::statements;
    use crate::sql::tests::META;
    use std::time::Duration;

    #[test]
    fn the_ledger_row_is_inserted_right_after_begin_in_one_string() {
        let sql = MySql::ledger_begin_sql(Duration::from_millis(1500), "orders", "billing", "1-0");
        assert_eq!(
            sql.as_deref(),
            Some(
                "SET SESSION innodb_lock_wait_timeout = 2; BEGIN; INSERT INTO safesync_queue_ledger \
                 (stream, consumer_group, entry_id) VALUES ('orders', 'billing', '1-0')"
            )
        );
    }

    /// The seconds `begin_sql` sets.
    fn begin_sql_secs(d: Duration) -> String {
        let sql = MySql::begin_sql(d);
        sql.trim_start_matches("SET SESSION innodb_lock_wait_timeout = ")
            .trim_end_matches("; BEGIN")
            .to_owned()
    }

    #[test]
    fn the_index_of_a_duplicate_is_read_from_mariadb_and_mysql_messages() {
        assert_eq!(
            duplicate_key_name("Duplicate entry '7' for key 'PRIMARY'"),
            Some("PRIMARY")
        );
        assert_eq!(
            duplicate_key_name("Duplicate entry 'a' for key 'accounts.PRIMARY'"),
            Some("PRIMARY")
        );
        assert_eq!(
            duplicate_key_name("Duplicate entry 'x@y' for key 'email'"),
            Some("email")
        );
        assert_eq!(duplicate_key_name("Data too long"), None);
    }

    #[test]
    fn the_row_lock_timeout_is_whole_seconds_rounded_up_at_least_one() {
        assert_eq!(begin_sql_secs(Duration::ZERO), "1");
        assert_eq!(begin_sql_secs(Duration::from_millis(1)), "1");
        assert_eq!(begin_sql_secs(Duration::from_millis(1500)), "2");
        assert_eq!(begin_sql_secs(Duration::from_secs(10)), "10");
    }

    #[test]
    fn mysql_versioned_update_checks_the_version_in_the_statement() {
        let s = statements::<sqlx::MySql>(&META);
        assert_eq!(
            s.update,
            "UPDATE `accounts` SET `owner` = ?, `balance` = ?, `version` = `version` + 1 \
             WHERE `id` = ? AND `version` = ?"
        );
        assert_eq!(s.insert_idempotent, s.insert);
        assert!(s.lock_nowait.ends_with("FOR UPDATE NOWAIT"));
        assert!(s.probe.ends_with(" LOCK IN SHARE MODE"));
    }
}
