//! Where a run works: a namespace of its own (a SQLite file, a MySQL
//! database, a PostgreSQL schema), one sqlx pool on it for the raw code and
//! the verification queries, and a [`Db`] over the same pool for the
//! framework, so both see identical connections.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use safesync::Db;
use sqlx::{MySqlPool, PgPool, SqlitePool, Transaction};

use crate::Backend;

/// Errors of a run; their text goes into the run's `detail`.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MYSQL_URL: &str = "mysql://safesync:safesync@127.0.0.1:3306/safesync";
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The Redis client of the queue workloads, or why there is none.
pub(crate) fn redis_client() -> Result<redis::Client, String> {
    let url = var("SAFESYNC_REDIS_URL", REDIS_URL);
    redis::Client::open(url.as_str()).map_err(|e| format!("bad SAFESYNC_REDIS_URL: {e}"))
}

/// Pool size of a run: what `Db::connect` picks (4 for a SQLite file, 10
/// for a server), for the framework and the raw code alike.
fn pool_size(backend: Backend) -> u32 {
    match backend {
        Backend::Sqlite => 4,
        Backend::MySql | Backend::Postgres => 10,
    }
}

/// A name no other run of this or another process uses: lower-case
/// letters, digits and `_`.
pub(crate) fn unique_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "ssbench_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfff
    )
}

/// The run's sqlx pool, on whichever backend.
#[derive(Debug, Clone)]
pub(crate) enum RawPool {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$p` bound to the concrete pool, so
/// raw code is written once and compiled for each sqlx database type.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::env::RawPool::Sqlite($p) => $body,
            $crate::env::RawPool::MySql($p) => $body,
            $crate::env::RawPool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A transaction for writing, as a careful hand-written program begins it:
/// `BEGIN IMMEDIATE` on SQLite (a deferred transaction that reads first
/// cannot upgrade to a writer once another has committed), a plain `BEGIN`
/// elsewhere.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for MySqlPool {
    type Db = sqlx::MySql;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, sqlx::MySql>, sqlx::Error>> + Send {
        self.begin()
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, sqlx::Postgres>, sqlx::Error>> + Send
    {
        self.begin()
    }
}

/// True for errors after which a new transaction may succeed: deadlock or
/// serialisation failure (SQLSTATE 40001/40P01, which MySQL's 1213 also
/// reports) and SQLite busy/locked.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| matches!(&*c, "40001" | "40P01" | "5" | "6" | "517" | "261"))
}

/// True for a unique-key violation.
pub(crate) fn is_duplicate(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(sqlx::error::DatabaseError::is_unique_violation)
}

enum Namespace {
    Dir(PathBuf),
    MySql(String),
    Postgres(String),
}

/// One run's database.
pub(crate) struct Env {
    pub(crate) backend: Backend,
    pub(crate) pool: RawPool,
    pub(crate) db: Db,
    /// Unique per run: the namespace's name, also used for stream keys and
    /// lock names.
    pub(crate) id: String,
    namespace: Namespace,
}

async fn admin_mysql() -> Result<sqlx::MySqlConnection, BoxError> {
    let url = var("SAFESYNC_MYSQL_URL", MYSQL_URL);
    let opts = sqlx::mysql::MySqlConnectOptions::from_str(&url)?;
    sqlx::ConnectOptions::connect(&opts)
        .await
        .map_err(|e| format!("MySQL/MariaDB at SAFESYNC_MYSQL_URL is not answering: {e}").into())
}

async fn admin_pg() -> Result<sqlx::PgConnection, BoxError> {
    let url = var("SAFESYNC_PG_URL", PG_URL);
    let opts = sqlx::postgres::PgConnectOptions::from_str(&url)?;
    sqlx::ConnectOptions::connect(&opts)
        .await
        .map_err(|e| format!("PostgreSQL at SAFESYNC_PG_URL is not answering: {e}").into())
}

impl Env {
    /// Creates the run's namespace and its pool.
    pub(crate) async fn create(backend: Backend) -> Result<Env, BoxError> {
        let id = unique_id();
        let max = pool_size(backend);
        let (pool, db, namespace) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&id);
                std::fs::create_dir_all(&dir)?;
                // What `Db::connect("sqlite:…")` sets up.
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.join("bench.db"))
                    .create_if_missing(true)
                    .busy_timeout(Duration::from_secs(10))
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(max)
                    .connect_with(opts)
                    .await?;
                let db = Db::from_sqlite_pool(pool.clone());
                (RawPool::Sqlite(pool), db, Namespace::Dir(dir))
            }
            Backend::MySql => {
                let mut admin = admin_mysql().await?;
                sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {id}").as_str())
                    .await?;
                sqlx::Connection::close(admin).await?;
                let url = var("SAFESYNC_MYSQL_URL", MYSQL_URL);
                let opts = sqlx::mysql::MySqlConnectOptions::from_str(&url)?.database(&id);
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(max)
                    .connect_with(opts)
                    .await?;
                let db = Db::from_mysql_pool(pool.clone());
                (RawPool::MySql(pool), db, Namespace::MySql(id.clone()))
            }
            Backend::Postgres => {
                let mut admin = admin_pg().await?;
                sqlx::Executor::execute(&mut admin, format!("CREATE SCHEMA {id}").as_str()).await?;
                sqlx::Connection::close(admin).await?;
                let url = var("SAFESYNC_PG_URL", PG_URL);
                let opts = sqlx::postgres::PgConnectOptions::from_str(&url)?
                    .options([("search_path", id.as_str())]);
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(max)
                    .connect_with(opts)
                    .await?;
                let db = Db::from_pg_pool(pool.clone());
                (RawPool::Postgres(pool), db, Namespace::Postgres(id.clone()))
            }
        };
        Ok(Env {
            backend,
            pool,
            db,
            id,
            namespace,
        })
    }

    /// Opens up to `n` pooled connections before the clock starts, so
    /// neither variant pays for connecting during its run.
    pub(crate) async fn warm(&self, n: usize) -> Result<(), BoxError> {
        on_pool!(&self.pool, |p| {
            let n = n.min(p.options().get_max_connections() as usize);
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                let mut c = p.acquire().await?;
                sqlx::query("SELECT 1").execute(&mut *c).await?;
                held.push(c);
            }
        });
        Ok(())
    }

    /// `sql` with `?` placeholders, in this backend's syntax (`$1, $2, …`
    /// on PostgreSQL).
    pub(crate) fn sql(&self, sql: &str) -> String {
        if self.backend != Backend::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Runs fixed SQL (DDL, several statements allowed).
    pub(crate) async fn exec(&self, sql: &str) -> Result<(), BoxError> {
        on_pool!(&self.pool, |p| {
            sqlx::raw_sql(sql).execute(p).await?;
        });
        Ok(())
    }

    /// One integer from a verification query.
    pub(crate) async fn int(&self, sql: &str) -> Result<i64, BoxError> {
        let v: i64 = on_pool!(&self.pool, |p| sqlx::query_scalar(sql).fetch_one(p).await?);
        Ok(v)
    }

    /// `SUM(col)` as a 64-bit integer on every backend (0 for no rows).
    pub(crate) fn sum(&self, col: &str) -> String {
        let ty = match self.backend {
            Backend::MySql => "SIGNED",
            Backend::Sqlite | Backend::Postgres => "BIGINT",
        };
        format!("CAST(COALESCE(SUM({col}), 0) AS {ty})")
    }

    /// Inserts `rows` (each a literal `(…)` tuple) in statements of 500.
    pub(crate) async fn insert_rows(
        &self,
        table: &str,
        columns: &str,
        rows: impl Iterator<Item = String>,
    ) -> Result<(), BoxError> {
        let rows: Vec<String> = rows.collect();
        for chunk in rows.chunks(500) {
            let sql = format!(
                "INSERT INTO {table} ({columns}) VALUES {}",
                chunk.join(", ")
            );
            self.exec(&sql).await?;
        }
        Ok(())
    }

    /// The SQLite run's directory (its lock files go there).
    pub(crate) fn dir(&self) -> Option<&std::path::Path> {
        match &self.namespace {
            Namespace::Dir(d) => Some(d),
            _ => None,
        }
    }

    /// Closes the pool and removes the namespace with everything in it.
    pub(crate) async fn cleanup(self) -> Result<(), BoxError> {
        on_pool!(&self.pool, |p| p.close().await);
        match self.namespace {
            Namespace::Dir(dir) => std::fs::remove_dir_all(dir)?,
            Namespace::MySql(name) => {
                let mut admin = admin_mysql().await?;
                sqlx::Executor::execute(&mut admin, format!("DROP DATABASE {name}").as_str())
                    .await?;
                sqlx::Connection::close(admin).await?;
            }
            Namespace::Postgres(name) => {
                let mut admin = admin_pg().await?;
                sqlx::Executor::execute(&mut admin, format!("DROP SCHEMA {name} CASCADE").as_str())
                    .await?;
                sqlx::Connection::close(admin).await?;
            }
        }
        Ok(())
    }
}
