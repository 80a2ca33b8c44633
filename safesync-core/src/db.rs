//! Connecting, and running transactions.

#[cfg(any(feature = "sqlite", feature = "mysql"))]
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
#[cfg(feature = "sqlite")]
use tokio::sync::Mutex;
use tracing::Instrument as _;

use crate::advisory::SpareConns;
use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::redact::redact_url;
use crate::retry::RetryPolicy;
use crate::tx::{Tx, TxInner};

/// Pool settings for [`Db::connect_with`].
///
/// ```
/// use std::time::Duration;
/// use safesync_core::DbOptions;
///
/// let opts = DbOptions::default()
///     .max_connections(32)
///     .acquire_timeout(Duration::from_secs(5));
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct DbOptions {
    max_connections: Option<u32>,
    min_connections: u32,
    acquire_timeout: Duration,
    connect_timeout: Duration,
    busy_timeout: Duration,
    idle_lock_connections: usize,
    metrics: Option<Metrics>,
}

/// How long [`Db::connect`] tries to open its first connection by default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Named-lock connections kept idle by default.
const DEFAULT_IDLE_LOCK_CONNECTIONS: usize = 8;

impl Default for DbOptions {
    /// sqlx's pool size (10; 1 for an in-memory SQLite database, whose
    /// connections would otherwise each see a database of their own), a 1 s
    /// connect timeout, a 10 s acquire timeout and a 10 s SQLite busy
    /// timeout.
    fn default() -> Self {
        DbOptions {
            max_connections: None,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            busy_timeout: Duration::from_secs(10),
            idle_lock_connections: DEFAULT_IDLE_LOCK_CONNECTIONS,
            metrics: None,
        }
    }
}

impl DbOptions {
    /// Largest number of pooled connections.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = Some(n.max(1));
        self
    }

    /// Connections kept open while idle.
    #[must_use]
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// How long `begin()` waits for a free connection before failing.
    #[must_use]
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    /// How long [`Db::connect_with`] tries to open a first connection
    /// (default 1 s) before it fails with the cause: "Connection refused",
    /// a host name that does not resolve, a refused login, TLS. A refused
    /// connection is retried within this time (the server may be starting);
    /// other errors return at once. Raise it for a far-away server whose
    /// handshake takes longer.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = safesync_core::DbOptions::default().connect_timeout(Duration::from_secs(3));
    /// # let _ = opts;
    /// ```
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// SQLite only: how long a statement waits for another process's
    /// write lock before failing with "database is locked".
    #[must_use]
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }

    /// MySQL/MariaDB and PostgreSQL: how many dedicated named-lock
    /// connections (see [`Db::advisory_lock`]) are kept open while they
    /// hold no lock, so the next lock reuses one instead of connecting
    /// (default 8; 0 closes each after its lock is released). Only a
    /// connection whose lock was released cleanly is kept.
    ///
    /// ```
    /// let opts = safesync_core::DbOptions::default().idle_lock_connections(16);
    /// # let _ = opts;
    /// ```
    #[must_use]
    pub fn idle_lock_connections(mut self, n: usize) -> Self {
        self.idle_lock_connections = n;
        self
    }

    /// Where the [`Db`] records its metrics; [`Metrics::global`] when not
    /// set.
    ///
    /// ```
    /// use safesync_core::{DbOptions, Metrics};
    ///
    /// let registry = prometheus::Registry::new();
    /// let opts = DbOptions::default().metrics(Metrics::register(&registry)?);
    /// # let _ = opts;
    /// # Ok::<_, safesync_core::Error>(())
    /// ```
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    #[cfg(any(feature = "sqlite", feature = "mysql", feature = "postgres"))]
    fn pool<DB: sqlx::Database>(&self, default_max: u32) -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(self.max_connections.unwrap_or(default_max))
            .min_connections(self.min_connections)
            .acquire_timeout(self.acquire_timeout)
    }
}

#[derive(Debug, Clone)]
enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// A database: a connection pool on SQLite, MySQL/MariaDB or PostgreSQL,
/// chosen by URL at run time. Cheap to clone.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use safesync_core::Db;
///
/// let db = Db::connect("sqlite::memory:").await?;
/// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").await?;
/// let n = db
///     .transaction(|tx| Box::pin(async move { tx.execute("INSERT INTO t VALUES (1)").await }))
///     .await?;
/// assert_eq!(n, 1);
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    /// SQLite: transactions of this `Db` queue here for the write lock.
    #[cfg(feature = "sqlite")]
    gate: Option<Arc<Mutex<()>>>,
    metrics: Metrics,
    /// Named-lock connections holding no lock, kept for reuse.
    lock_conns: SpareConns,
    /// MySQL: per table, whether its primary key is the record's key.
    #[cfg(feature = "mysql")]
    primary_keys: PrimaryKeys,
}

/// MySQL: per (schema, table), whether the primary key is exactly the
/// record's key, so that a duplicate on `PRIMARY` needs no probe.
#[cfg(feature = "mysql")]
#[derive(Debug, Clone, Default)]
pub(crate) struct PrimaryKeys(Arc<std::sync::Mutex<std::collections::HashMap<TableName, bool>>>);

/// A table's optional schema and its name.
#[cfg(feature = "mysql")]
type TableName = (Option<&'static str>, &'static str);

#[cfg(feature = "mysql")]
impl PrimaryKeys {
    pub(crate) fn get(&self, schema: Option<&'static str>, table: &'static str) -> Option<bool> {
        self.0.lock().ok()?.get(&(schema, table)).copied()
    }

    pub(crate) fn set(&self, schema: Option<&'static str>, table: &'static str, same: bool) {
        if let Ok(mut map) = self.0.lock() {
            map.insert((schema, table), same);
        }
    }
}

#[cfg(not(all(feature = "sqlite", feature = "mysql", feature = "postgres")))]
fn unsupported(scheme: &str, feature: &str) -> Error {
    Error::Config(format!(
        "`{scheme}` URLs need the `{feature}` feature of safesync, which is not enabled"
    ))
}

impl Db {
    /// Connects from a URL: `sqlite:path`, `sqlite::memory:`,
    /// `mysql://user:pass@host/db` (also `mariadb://`),
    /// `postgres://user@host/db` (also `postgresql://`).
    ///
    /// A file SQLite database is created when missing and opened in WAL mode.
    ///
    /// One connection is opened first, within
    /// [`DbOptions::connect_timeout`] (1 s by default): a server that is
    /// not there fails fast as [`Error::Connect`] with the cause
    /// ("Connection refused", an unknown host, a refused login), not as a
    /// pool timeout. Errors never contain the password.
    pub async fn connect(url: &str) -> Result<Db> {
        Db::connect_with(url, DbOptions::default()).await
    }

    /// [`Db::connect`] with pool settings.
    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Db> {
        let scheme = url.split(':').next().unwrap_or_default();
        let redacted = redact_url(url);
        let bad_url = |e: sqlx::Error| {
            Error::Config(format!(
                "cannot parse database URL `{redacted}`: {}",
                e.to_string().replace(url, &redacted)
            ))
        };
        let _ = (&options, &bad_url);
        match scheme {
            "sqlite" => {
                #[cfg(feature = "sqlite")]
                {
                    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
                    use std::str::FromStr;
                    let memory = url.contains(":memory:") || url.contains("mode=memory");
                    let mut opts = SqliteConnectOptions::from_str(url)
                        .map_err(bad_url)?
                        .create_if_missing(true)
                        .busy_timeout(options.busy_timeout);
                    if !memory {
                        opts = opts.journal_mode(SqliteJournalMode::Wal);
                    }
                    let pool = crate::connect::pool(
                        options.pool(if memory { 1 } else { 4 }),
                        opts,
                        options.connect_timeout,
                        &redacted,
                    )
                    .await?;
                    Ok(Db::wrap(Pool::Sqlite(pool), &options))
                }
                #[cfg(not(feature = "sqlite"))]
                Err(unsupported(scheme, "sqlite"))
            }
            "mysql" | "mariadb" => {
                #[cfg(feature = "mysql")]
                {
                    use std::str::FromStr;
                    let fixed = url.replacen("mariadb:", "mysql:", 1);
                    let opts =
                        sqlx::mysql::MySqlConnectOptions::from_str(&fixed).map_err(bad_url)?;
                    let pool = crate::connect::pool(
                        options.pool(10),
                        opts,
                        options.connect_timeout,
                        &redacted,
                    )
                    .await?;
                    Ok(Db::wrap(Pool::MySql(pool), &options))
                }
                #[cfg(not(feature = "mysql"))]
                Err(unsupported(scheme, "mysql"))
            }
            "postgres" | "postgresql" => {
                #[cfg(feature = "postgres")]
                {
                    use std::str::FromStr;
                    let opts = sqlx::postgres::PgConnectOptions::from_str(url).map_err(bad_url)?;
                    let pool = crate::connect::pool(
                        options.pool(10),
                        opts,
                        options.connect_timeout,
                        &redacted,
                    )
                    .await?;
                    Ok(Db::wrap(Pool::Postgres(pool), &options))
                }
                #[cfg(not(feature = "postgres"))]
                Err(unsupported(scheme, "postgres"))
            }
            _ => Err(Error::Config(format!(
                "unsupported database URL `{redacted}`: expected it to start with \
                 `sqlite:`, `mysql://`, `mariadb://` or `postgres://`"
            ))),
        }
    }

    /// A `Db` on `pool`, with the settings of `options` that are not the
    /// pool's.
    fn wrap(pool: Pool, options: &DbOptions) -> Db {
        Db {
            #[cfg(feature = "sqlite")]
            gate: matches!(pool, Pool::Sqlite(_)).then(|| Arc::new(Mutex::new(()))),
            pool,
            metrics: options.metrics.clone().unwrap_or_else(Metrics::global),
            lock_conns: SpareConns::new(options.idle_lock_connections),
            #[cfg(feature = "mysql")]
            primary_keys: PrimaryKeys::default(),
        }
    }

    /// MySQL: what is known of tables' primary keys.
    #[cfg(feature = "mysql")]
    pub(crate) fn primary_keys(&self) -> &PrimaryKeys {
        &self.primary_keys
    }

    /// Named-lock connections kept for reuse.
    pub(crate) fn lock_conns(&self) -> &SpareConns {
        &self.lock_conns
    }

    /// Wraps an existing SQLite pool (its transactions become `BEGIN IMMEDIATE`).
    /// It records into [`Metrics::global`]; see [`Db::with_metrics`].
    #[cfg(feature = "sqlite")]
    pub fn from_sqlite_pool(pool: sqlx::SqlitePool) -> Db {
        Db::wrap(Pool::Sqlite(pool), &DbOptions::default())
    }

    /// Wraps an existing MySQL/MariaDB pool.
    /// It records into [`Metrics::global`]; see [`Db::with_metrics`].
    #[cfg(feature = "mysql")]
    pub fn from_mysql_pool(pool: sqlx::MySqlPool) -> Db {
        Db::wrap(Pool::MySql(pool), &DbOptions::default())
    }

    /// Wraps an existing PostgreSQL pool.
    /// It records into [`Metrics::global`]; see [`Db::with_metrics`].
    #[cfg(feature = "postgres")]
    pub fn from_pg_pool(pool: sqlx::PgPool) -> Db {
        Db::wrap(Pool::Postgres(pool), &DbOptions::default())
    }

    /// This `Db`, recording its metrics into `metrics` from now on
    /// (transactions already begun keep the metrics they had).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use safesync_core::{Db, Metrics};
    ///
    /// let registry = prometheus::Registry::new();
    /// let db = Db::connect("sqlite::memory:").await?.with_metrics(Metrics::register(&registry)?);
    /// # let _ = db;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Db {
        self.metrics = metrics;
        self
    }

    /// The metrics this `Db` records into.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let metrics = db.metrics().clone(); // `Metrics::global()` here
    /// # let _ = metrics;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The backend's SQL dialect.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "mysql")]
            Pool::MySql(_) => Dialect::MySql,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The underlying SQLite pool, for queries of your own.
    #[cfg(feature = "sqlite")]
    pub fn as_sqlite(&self) -> Option<&sqlx::SqlitePool> {
        match &self.pool {
            Pool::Sqlite(p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The underlying MySQL pool, for queries of your own.
    #[cfg(feature = "mysql")]
    pub fn as_mysql(&self) -> Option<&sqlx::MySqlPool> {
        match &self.pool {
            Pool::MySql(p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The underlying PostgreSQL pool, for queries of your own.
    #[cfg(feature = "postgres")]
    pub fn as_postgres(&self) -> Option<&sqlx::PgPool> {
        match &self.pool {
            Pool::Postgres(p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Begins a transaction. Dropping it without `commit` rolls it back.
    ///
    /// The transaction has a `safesync.transaction` tracing span (info
    /// level, fields `dialect` and `outcome`), open until it commits, rolls
    /// back or is dropped; the record operations run inside it.
    pub async fn begin(&self) -> Result<Tx<'static>> {
        let span = tracing::info_span!(
            "safesync.transaction",
            dialect = ?self.dialect(),
            outcome = tracing::field::Empty,
        );
        let (inner, gate) = async {
            Ok::<_, Error>(match &self.pool {
                #[cfg(feature = "sqlite")]
                Pool::Sqlite(p) => {
                    let gate = match &self.gate {
                        Some(g) => Some(Arc::clone(g).lock_owned().await),
                        None => None,
                    };
                    let t = p.begin_with("BEGIN IMMEDIATE").await?;
                    (TxInner::Sqlite(t), gate)
                }
                #[cfg(feature = "mysql")]
                Pool::MySql(p) => (TxInner::MySql(p.begin().await?), None),
                #[cfg(feature = "postgres")]
                Pool::Postgres(p) => (TxInner::Postgres(p.begin().await?), None),
            })
        }
        .instrument(span.clone())
        .await?;
        Ok(Tx::new(
            inner,
            self.clone(),
            gate,
            self.metrics.clone(),
            span,
        ))
    }

    /// Runs `f` in a new transaction: commits when it returns `Ok`, rolls
    /// back when it returns `Err` or panics.
    ///
    /// `f` returns a boxed future (`|tx| Box::pin(async move { … })`) so the
    /// call stays `Send` inside `tokio::spawn`, which an `async` closure
    /// borrowing the transaction is not on current rustc.
    ///
    /// The closure may borrow from its surroundings: the transaction it gets
    /// is a `Tx<'a>` whose lifetime `'a` covers those borrows.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let sql = String::from("SELECT 1");
    /// let sql = &sql; // borrowed, not moved, into the transaction
    /// db.transaction(|tx| Box::pin(async move { tx.execute(sql).await })).await?;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn transaction<'a, T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Tx<'a>) -> BoxFuture<'t, Result<T, E>> + Send,
        E: From<Error> + Send,
        T: Send,
    {
        // `Tx` is covariant: the pool's `Tx<'static>` serves as a `Tx<'a>`,
        // which lets the closure's future hold borrows of lifetime `'a`.
        let mut tx: Tx<'a> = self.begin().await?;
        let span = tx.span.clone();
        match f(&mut tx).instrument(span).await {
            Ok(v) => {
                tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed transaction failed");
                }
                Err(e)
            }
        }
    }

    /// Runs `f` in a new transaction per attempt, retrying what `policy`
    /// deems safe (version conflicts, deadlocks, busy) with back-off.
    ///
    /// Every attempt gets a fresh transaction and re-reads what it needs, so
    /// a retry inside one transaction cannot be written. A non-retryable
    /// error returns at once, as it is; when attempts or time run out the
    /// result is [`Error::RetriesExhausted`] with the last error inside.
    ///
    /// Each attempt runs in a `safesync.retry.attempt` tracing span (info
    /// level, field `attempt`, from 1), and every attempt after the first
    /// adds one to `safesync_retry_attempts_total` (see [`Metrics`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use safesync_core::{Db, RetryPolicy};
    ///
    /// let db = Db::connect("sqlite::memory:").await?;
    /// let n = db
    ///     .retry(RetryPolicy::default(), |tx| Box::pin(async move { tx.execute("SELECT 1").await }))
    ///     .await?;
    /// # let _ = n;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn retry<'a, T, F>(&self, policy: RetryPolicy, mut f: F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut Tx<'a>) -> BoxFuture<'t, Result<T>> + Send,
        T: Send,
    {
        let start = Instant::now();
        let mut rng = fastrand::Rng::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if attempt > 1 {
                self.metrics.retry_attempt();
            }
            let span = tracing::info_span!("safesync.retry.attempt", attempt);
            let err = match self.transaction(&mut f).instrument(span).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !policy.retries(&err) {
                return Err(err);
            }
            let elapsed = start.elapsed();
            let delay = policy.backoff(attempt, &mut rng);
            if attempt >= policy.attempts() || elapsed + delay >= policy.elapsed_budget() {
                return Err(Error::RetriesExhausted {
                    attempts: attempt,
                    elapsed,
                    last: Box::new(err),
                });
            }
            tracing::debug!(attempt, error = %err, ?delay, "retrying in a new transaction");
            tokio::time::sleep(delay).await;
        }
    }

    /// Runs SQL with no parameters (several statements allowed) outside any
    /// transaction; returns the rows affected. Meant for DDL and migrations;
    /// a statement with values is [`Db::execute_with`].
    pub async fn execute(&self, sql: &str) -> Result<u64> {
        let q = sqlx::raw_sql(sql);
        let done = match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p) => {
                let _gate = match &self.gate {
                    Some(g) => Some(g.lock().await),
                    None => None,
                };
                q.execute(p).await?.rows_affected()
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(p) => q.execute(p).await?.rows_affected(),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => q.execute(p).await?.rows_affected(),
        };
        Ok(done)
    }

    /// Closes every pooled connection, and the idle named-lock connections.
    pub async fn close(&self) {
        self.lock_conns.clear();
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p) => p.close().await,
            #[cfg(feature = "mysql")]
            Pool::MySql(p) => p.close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => p.close().await,
        }
    }
}
