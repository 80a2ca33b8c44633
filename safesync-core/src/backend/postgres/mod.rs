//! PostgreSQL (tested: 15): double quotes, `$n` placeholders, `FOR UPDATE` row
//! locks bounded by a transaction-local `lock_timeout`, session
//! `pg_advisory_lock` named locks on dedicated connections, and
//! `pg_advisory_xact_lock` for transaction-scoped ones.

mod schema;

use std::borrow::Cow;
use std::str::FromStr as _;
use std::time::Duration;

use futures_core::future::BoxFuture;
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError};
use sqlx::{Executor as _, PgConnection, Postgres};
use tokio::sync::OwnedMutexGuard;

use super::{Backend, DbErrorKind, Lexical, RowLocks, XactLock};
use crate::db::{Db, DbOptions};
use crate::error::Result;
use crate::lock::{Held, LockSession, SpareConns, advisory_key};
use crate::record::{Record, TableMeta};
use crate::schema::{ColumnType, LiveTable};
use crate::tx::Tx;

impl Backend for Postgres {
    const DIALECT: super::Dialect = super::Dialect::Postgres;
    const QUOTE: char = '"';

    fn placeholder(out: &mut String, n: usize) {
        use std::fmt::Write as _;
        let _ = write!(out, "${n}");
    }

    const ROW_LOCKS: Option<RowLocks> = Some(RowLocks {
        wait: " FOR UPDATE",
        nowait: " FOR UPDATE NOWAIT",
        skip_locked: " FOR UPDATE SKIP LOCKED",
    });
    const PROBE_SUFFIX: &'static str = "";
    const ERROR_ABORTS_TRANSACTION: bool = true;
    const ON_CONFLICT_DO_NOTHING: bool = true;

    fn classify(err: &(dyn DatabaseError + 'static)) -> Option<DbErrorKind> {
        match err.try_downcast_ref::<PgDatabaseError>()?.code() {
            // unique_violation
            "23505" => Some(DbErrorKind::Duplicate),
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => Some(DbErrorKind::Deadlock),
            // lock_not_available: NOWAIT, and lock_timeout expiring
            "55P03" => Some(DbErrorKind::LockWaitTimeout),
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

    type State = ();

    fn connect_options(
        url: &str,
        _options: &DbOptions,
    ) -> std::result::Result<(PgConnectOptions, u32), sqlx::Error> {
        Ok((PgConnectOptions::from_str(url)?, 10))
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn new_state() {}

    async fn write_gate(_state: &(), _timeout: Duration) -> Result<Option<OwnedMutexGuard<()>>> {
        Ok(None)
    }

    /// `SET LOCAL` lasts until the transaction ends, so pooled connections
    /// (also those of a pool given to [`Db::from_pg_pool`]) keep their own
    /// setting; both statements go in one simple-query round trip.
    fn begin_sql(lock_timeout: Duration) -> Cow<'static, str> {
        Cow::Owned(format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'",
            lock_timeout.as_millis().max(1)
        ))
    }

    async fn lock_named(
        db: &Db,
        pool: &sqlx::PgPool,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Held>> {
        let key = advisory_key(name);
        let mut spare = db.lock_conns().take::<KeptConn>();
        loop {
            let reused = spare.is_some();
            let mut kept = if let Some(kept) = spare.take() {
                kept
            } else {
                let mut conn: PgConnection =
                    sqlx::ConnectOptions::connect(&*pool.connect_options()).await?;
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut conn)
                    .await?;
                KeptConn {
                    conn,
                    pid: i64::from(pid),
                    lock_timeout: None,
                }
            };
            match session_lock(&mut kept, key, timeout).await {
                Err(e) if reused => {
                    tracing::debug!(error = %e, "a kept lock connection failed; opening a new one");
                }
                Err(e) => return Err(e),
                Ok(true) => {
                    let id = Some(kept.pid);
                    return Ok(Some(Held {
                        session: Box::new(Session { kept, key }),
                        id,
                    }));
                }
                Ok(false) => {
                    db.lock_conns().put(kept);
                    return Ok(None);
                }
            }
        }
    }

    /// `pg_advisory_xact_lock` bounded by `lock_timeout`, under a savepoint
    /// so a timeout does not abort the caller's transaction.
    async fn lock_xact(conn: &mut PgConnection, name: &str, timeout: Duration) -> Result<XactLock> {
        let key = advisory_key(name);
        let taken = |yes| if yes { XactLock::Taken } else { XactLock::Busy };
        if timeout.is_zero() {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
            return Ok(taken(got));
        }
        (&mut *conn).execute("SAVEPOINT safesync_xact_lock").await?;
        let previous: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(format!("{}ms", timeout.as_millis().max(1)))
            .execute(&mut *conn)
            .await?;
        let got = sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await;
        match got {
            Ok(_) => {
                (&mut *conn)
                    .execute("RELEASE SAVEPOINT safesync_xact_lock")
                    .await?;
                // Restore the caller's lock_timeout for the rest of the
                // transaction (a rollback to the savepoint would have
                // restored it by itself).
                sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                    .bind(previous)
                    .execute(&mut *conn)
                    .await?;
                Ok(XactLock::Taken)
            }
            Err(e) => {
                (&mut *conn)
                    .execute("ROLLBACK TO SAVEPOINT safesync_xact_lock")
                    .await?;
                if super::is_lock_wait_timeout(&e) {
                    Ok(XactLock::Busy)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    const FENCE_DDL: &'static str = "CREATE TABLE IF NOT EXISTS safesync_fence (
    name TEXT NOT NULL PRIMARY KEY,
    token BIGINT NOT NULL
)";

    fn fence_key(name: &str) -> Cow<'_, str> {
        Cow::Borrowed(name)
    }

    async fn fence_next(conn: &mut PgConnection, key: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO safesync_fence (name, token) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET token = safesync_fence.token + 1 RETURNING token",
        )
        .bind(key)
        .fetch_one(conn)
        .await?)
    }

    // FOR SHARE (not FOR KEY SHARE): it conflicts with the increment's
    // update of the row, which then waits until this transaction ends.
    async fn fence_current(conn: &mut PgConnection, key: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT token FROM safesync_fence WHERE name = $1 FOR SHARE")
                .bind(key)
                .fetch_optional(conn)
                .await?,
        )
    }

    const LEDGER_DDL: &'static str = "CREATE TABLE IF NOT EXISTS safesync_queue_ledger (
    stream TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, consumer_group, entry_id)
)";

    const LEDGER_PRUNE: &'static str =
        "DELETE FROM safesync_queue_ledger WHERE processed_at < now() - ? * interval '1 second'";

    async fn ledger_insert(
        conn: &mut PgConnection,
        stream: &str,
        group: &str,
        id: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(stream)
        .bind(group)
        .bind(id)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The row is inserted in the implicit transaction of the one simple
    /// query, which `BEGIN` turns into the transaction: a duplicate fails
    /// the whole string and leaves the session idle.
    fn ledger_begin_sql(
        lock_timeout: Duration,
        stream: &str,
        group: &str,
        id: &str,
    ) -> Option<String> {
        Some(format!(
            "SET LOCAL lock_timeout = '{}ms'; {}; BEGIN",
            lock_timeout.as_millis().max(1),
            super::ledger_insert_literal(stream, group, id)
        ))
    }

    async fn ledger_insert_all(
        conn: &mut PgConnection,
        stream: &str,
        group: &str,
        ids: &[&str],
    ) -> Result<u64> {
        Ok(sqlx::query(
            "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
             SELECT $1, $2, unnest($3::text[])",
        )
        .bind(stream)
        .bind(group)
        .bind(ids)
        .execute(conn)
        .await?
        .rows_affected())
    }

    const OUTBOX_DDL: &'static [&'static str] = &[
        "CREATE TABLE IF NOT EXISTS safesync_queue_outbox (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    stream TEXT NOT NULL,
    nonce BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)",
        "CREATE INDEX IF NOT EXISTS safesync_queue_outbox_stream \
         ON safesync_queue_outbox (stream, id)",
    ];

    const OUTBOX_CLAIM: &'static str = "SELECT id, nonce, payload FROM safesync_queue_outbox \
         WHERE stream = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED";

    const OUTBOX_STREAMS: &'static str = "SELECT DISTINCT stream FROM safesync_queue_outbox";

    const LEXICAL: Lexical = Lexical {
        numbered: true,
        mysql_comments_and_escapes: false,
        bracket_identifiers: false,
    };
    const MAX_PARAMS: usize = 65_535;

    const CASE_SENSITIVE_NAMES: bool = true;
    const TABLE_OPTIONS: &'static str = "";

    fn ddl_type(ty: ColumnType, _in_key: bool) -> &'static str {
        schema::ddl_type(ty)
    }

    fn holds(ty: ColumnType, sql_type: &str) -> bool {
        schema::holds(ty, sql_type)
    }

    async fn live_table(
        pool: &sqlx::Pool<Postgres>,
        meta: &TableMeta,
    ) -> Result<Option<LiveTable>> {
        schema::live_table(pool, meta).await
    }
}

/// A dedicated named-lock connection, with its `pg_backend_pid()` and the
/// `lock_timeout` last set on it.
struct KeptConn {
    conn: PgConnection,
    pid: i64,
    lock_timeout: Option<Duration>,
}

/// `pg_advisory_lock` bounded by the session's `lock_timeout`, which is set
/// only when it differs from what the connection has (the connection is
/// dedicated, so the setting stays ours); `pg_try_advisory_lock` for a zero
/// timeout. `Ok(false)`: still busy.
async fn session_lock(kept: &mut KeptConn, key: i64, timeout: Duration) -> Result<bool> {
    let conn = &mut kept.conn;
    if timeout.is_zero() {
        return Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?);
    }
    if kept.lock_timeout != Some(timeout) {
        kept.lock_timeout = None;
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{}ms", timeout.as_millis().max(1)))
            .execute(&mut *conn)
            .await?;
        kept.lock_timeout = Some(timeout);
    }
    match sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if super::is_lock_wait_timeout(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A session `pg_advisory_lock` held on a dedicated connection.
struct Session {
    kept: KeptConn,
    key: i64,
}

impl LockSession for Session {
    fn check(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { sqlx::Connection::ping(&mut self.kept.conn).await.is_ok() })
    }

    fn release(self: Box<Self>, spare: &SpareConns) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let Session { mut kept, key } = *self;
            let r: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .fetch_one(&mut kept.conn)
                .await?;
            if r {
                spare.put(kept);
            } else {
                let _ = sqlx::Connection::close(kept.conn).await;
            }
            Ok(r)
        })
    }

    fn can_be_lost(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "pg_advisory"
    }
}

super::accessors!(
    Postgres,
    "PostgreSQL",
    sqlx::PgPool,
    sqlx::PgConnection,
    from_pg_pool,
    as_postgres,
    "It is set transaction-locally (`SET LOCAL lock_timeout`) with each `BEGIN`."
);

#[cfg(test)]
mod sql_tests {
    use crate::backend::Backend as _;
    use crate::record::TableMeta;
    use crate::sql::statements;
    use crate::sql::tests::META;

    /// The row goes in the implicit transaction that `BEGIN` then turns
    /// into the transaction: `BEGIN` comes last, so a duplicate key fails
    /// the string with no transaction left open.
    #[test]
    fn the_ledger_row_is_inserted_before_begin_in_one_string() {
        let sql = sqlx::Postgres::ledger_begin_sql(
            std::time::Duration::from_millis(1500),
            "orders",
            "billing",
            "1-0",
        );
        assert_eq!(
            sql.as_deref(),
            Some(
                "SET LOCAL lock_timeout = '1500ms'; INSERT INTO safesync_queue_ledger \
                 (stream, consumer_group, entry_id) VALUES ('orders', 'billing', '1-0'); BEGIN"
            )
        );
    }

    #[test]
    fn postgres_numbers_placeholders_and_uses_on_conflict() {
        let s = statements::<sqlx::Postgres>(&META);
        assert_eq!(
            s.update,
            "UPDATE \"accounts\" SET \"owner\" = $1, \"balance\" = $2, \"version\" = \"version\" + 1 \
             WHERE \"id\" = $3 AND \"version\" = $4"
        );
        assert_eq!(
            s.insert_idempotent,
            "INSERT INTO \"accounts\" (\"id\", \"owner\", \"balance\", \"version\") \
             VALUES ($1, $2, $3, $4) ON CONFLICT (\"id\") DO NOTHING"
        );
        assert_eq!(
            s.lock_skip_locked,
            "SELECT \"id\", \"owner\", \"balance\", \"version\" FROM \"accounts\" \
             WHERE \"id\" = $1 FOR UPDATE SKIP LOCKED"
        );
    }

    #[test]
    fn composite_key_without_version() {
        const M: TableMeta = TableMeta {
            table: "memberships",
            schema: Some("app"),
            columns: &["org", "user_id", "role"],
            key: &[0, 1],
            version: None,
        };
        let s = statements::<sqlx::Postgres>(&M);
        assert_eq!(
            s.update,
            "UPDATE \"app\".\"memberships\" SET \"role\" = $1 WHERE \"org\" = $2 AND \"user_id\" = $3"
        );
        assert_eq!(
            s.delete,
            "DELETE FROM \"app\".\"memberships\" WHERE \"org\" = $1 AND \"user_id\" = $2"
        );
        assert_eq!(
            s.probe,
            "SELECT 1 FROM \"app\".\"memberships\" WHERE \"org\" = $1 AND \"user_id\" = $2"
        );
    }
}
