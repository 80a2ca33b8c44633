//! Connecting, and running transactions.

use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
use tracing::Instrument as _;

use crate::backend::{Backend, BackendPool, Dialect, Pool, for_each_backend, on_pool};
use crate::error::{Error, Result};
use crate::lock::SpareConns;
use crate::metrics::Metrics;
use crate::redact::redact_url;
use crate::retry::RetryPolicy;
use crate::tx::Tx;

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
    lock_timeout: Duration,
    idle_lock_connections: usize,
    metrics: Option<Metrics>,
}

/// How long [`Db::connect`] tries to open its first connection by default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Named-lock connections kept idle by default.
const DEFAULT_IDLE_LOCK_CONNECTIONS: usize = 8;

/// How long a row lock (and SQLite's write lock) is waited for by default.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait any setting may ask for: `i32::MAX` milliseconds (about
/// 24.8 days), the largest that SQLite's busy handler and PostgreSQL's
/// `lock_timeout` take.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(i32::MAX as u64);

/// `Err(Error::Config)` naming `setting` when `d` is over [`MAX_WAIT`].
pub(crate) fn check_wait(setting: &str, d: Duration) -> Result<()> {
    if d > MAX_WAIT {
        return Err(Error::Config(format!(
            "{setting} of {d:?} is over the longest supported wait, {MAX_WAIT:?} (about 24.8 days)"
        )));
    }
    Ok(())
}

impl Default for DbOptions {
    /// sqlx's pool size (10; 1 for an in-memory SQLite database, whose
    /// connections would otherwise each see a database of their own), a 1 s
    /// connect timeout, a 10 s acquire timeout, a 10 s SQLite busy timeout
    /// and a 10 s lock timeout.
    fn default() -> Self {
        DbOptions {
            max_connections: None,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            busy_timeout: Duration::from_secs(10),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
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

    /// How long `begin()` waits for a free connection before failing. At
    /// most about 24.8 days: a longer one is [`Error::Config`] when
    /// connecting.
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
    /// write lock before failing with "database is locked". At most about
    /// 24.8 days: a longer one is [`Error::Config`] when connecting.
    #[must_use]
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }

    #[allow(dead_code)] // reason: only SQLite has a busy timeout
    pub(crate) fn busy_timeout_value(&self) -> Duration {
        self.busy_timeout
    }

    /// How long a row lock is waited for (default 10 s); then the call
    /// fails with [`Error::LockTimeout`] naming the table and key. At most
    /// about 24.8 days: a longer one is [`Error::Config`] when connecting.
    ///
    /// | backend | what is bounded | after the timeout |
    /// |---|---|---|
    /// | PostgreSQL | `lock`, writes to a locked row, and any other lock wait of the transaction's statements, table locks of DDL included (`SET LOCAL lock_timeout` sent with `BEGIN`, one round trip) | the transaction is aborted: roll it back |
    /// | MySQL/MariaDB | the same (`SET SESSION innodb_lock_wait_timeout`, whole seconds rounded up, sent with `BEGIN`) | only the statement is rolled back: the transaction stays usable |
    /// | SQLite | [`Db::begin`] waiting for this `Db`'s other transactions (SQLite has no row locks: a transaction holds the write lock from `begin`) | nothing began |
    ///
    /// [`RetryPolicy`] retries it only with
    /// [`retry_lock_timeouts`](RetryPolicy::retry_lock_timeouts). Named
    /// locks have their own timeout, given with each call.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = safesync_core::DbOptions::default().lock_timeout(Duration::from_secs(2));
    /// # let _ = opts;
    /// ```
    #[must_use]
    pub fn lock_timeout(mut self, d: Duration) -> Self {
        self.lock_timeout = d;
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

    /// `Err(Error::Config)` naming a setting no backend can honour.
    fn check(&self) -> Result<()> {
        check_wait("`DbOptions::busy_timeout`", self.busy_timeout)?;
        check_wait("`DbOptions::lock_timeout`", self.lock_timeout)?;
        check_wait("`DbOptions::acquire_timeout`", self.acquire_timeout)?;
        check_wait("`DbOptions::connect_timeout`", self.connect_timeout)
    }

    fn pool<DB: sqlx::Database>(&self, default_max: u32) -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(self.max_connections.unwrap_or(default_max))
            .min_connections(self.min_connections)
            .acquire_timeout(self.acquire_timeout)
    }
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
    metrics: Metrics,
    /// Named-lock connections holding no lock, kept for reuse.
    lock_conns: SpareConns,
    /// Bound of every row-lock wait (and SQLite's write-lock wait).
    lock_timeout: Duration,
    /// Set once the table of fencing tokens is known to exist.
    fence_table: std::sync::Arc<tokio::sync::OnceCell<()>>,
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
    /// pool timeout; a server certificate that TLS cannot verify (feature
    /// `tls`) fails as [`Error::TlsNotTrusted`]. Errors never contain the
    /// password.
    pub async fn connect(url: &str) -> Result<Db> {
        Db::connect_with(url, DbOptions::default()).await
    }

    /// [`Db::connect`] with pool settings.
    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Db> {
        options.check()?;
        let scheme = url.split(':').next().unwrap_or_default();
        let redacted = redact_url(url);
        macro_rules! connect_arms {
            ([] $(($feature:literal, $variant:ident, $db:ty, [$($scheme:literal),*], $codec:ident))*) => {
                $(
                    #[cfg(feature = $feature)]
                    if [$($scheme),*].contains(&scheme) {
                        return Db::connect_on::<$db>(url, &redacted, &options).await;
                    }
                )*
            };
        }
        for_each_backend!(connect_arms! {});
        Err(Error::Config(
            match crate::backend::scheme_feature(scheme) {
                Some(feature) => format!(
                    "`{scheme}` URLs need the `{feature}` feature of safesync, which is not enabled"
                ),
                None => format!(
                    "unsupported database URL `{redacted}`: expected it to start with \
                 `sqlite:`, `mysql://`, `mariadb://` or `postgres://`"
                ),
            },
        ))
    }

    /// Connects to backend `B`.
    async fn connect_on<B: Backend>(url: &str, redacted: &str, options: &DbOptions) -> Result<Db>
    where
        Pool: From<BackendPool<B>>,
    {
        let (opts, default_max) = B::connect_options(url, options).map_err(|e| {
            Error::Config(format!(
                "cannot parse database URL `{redacted}`: {}",
                e.to_string().replace(url, redacted)
            ))
        })?;
        let pool = crate::connect::pool(
            options.pool::<B>(default_max),
            opts,
            options.connect_timeout,
            redacted,
        )
        .await?;
        Ok(Db::wrap(Pool::from(BackendPool::new(pool)), options))
    }

    /// A `Db` on `pool`, with the settings of `options` that are not the
    /// pool's.
    pub(crate) fn wrap(pool: Pool, options: &DbOptions) -> Db {
        Db {
            pool,
            metrics: options.metrics.clone().unwrap_or_else(Metrics::global),
            lock_conns: SpareConns::new(options.idle_lock_connections),
            lock_timeout: options.lock_timeout,
            fence_table: std::sync::Arc::default(),
        }
    }

    /// The pool, on its backend.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The bound of row-lock waits ([`DbOptions::lock_timeout`]).
    pub(crate) fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// Set once the table of fencing tokens exists.
    pub(crate) fn fence_table(&self) -> &tokio::sync::OnceCell<()> {
        &self.fence_table
    }

    /// Named-lock connections kept for reuse.
    pub(crate) fn lock_conns(&self) -> &SpareConns {
        &self.lock_conns
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

    /// This `Db`, bounding row-lock waits (and SQLite's write-lock wait)
    /// by `timeout` from now on ([`DbOptions::lock_timeout`]; for a pool
    /// wrapped with `Db::from_*_pool`). Over about 24.8 days is
    /// [`Error::Config`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    ///
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let db = db.with_lock_timeout(Duration::from_secs(2))?;
    /// assert!(db.clone().with_lock_timeout(Duration::MAX).is_err());
    /// # let _ = db;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Result<Db> {
        check_wait("`Db::with_lock_timeout`", timeout)?;
        self.lock_timeout = timeout;
        Ok(self)
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
        on_pool!(&self.pool, |_p, DB| <DB as Backend>::DIALECT)
    }

    /// Begins a transaction. Dropping it without `commit` rolls it back.
    ///
    /// The transaction has a `safesync.transaction` tracing span (info
    /// level, fields `dialect` and `outcome`), open until it commits, rolls
    /// back or is dropped; the record operations run inside it.
    pub async fn begin(&self) -> Result<Tx<'static>> {
        let span = self.tx_span();
        let timeout = self.lock_timeout;
        let (inner, gate) = async {
            on_pool!(&self.pool, |p, DB| {
                let gate = <DB as Backend>::write_gate(&p.state, timeout).await?;
                let t = p
                    .pool
                    .begin_with(<DB as Backend>::begin_sql(timeout))
                    .await?;
                Ok::<_, Error>((crate::backend::TxInner::from(t), gate))
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

    /// A new transaction's `safesync.transaction` span.
    pub(crate) fn tx_span(&self) -> tracing::Span {
        tracing::info_span!(
            "safesync.transaction",
            dialect = ?self.dialect(),
            outcome = tracing::field::Empty,
        )
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
        let tx: Tx<'a> = self.begin().await?;
        run_in(tx, f).await
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
        let mut attempts = Attempts::new(self, policy);
        loop {
            let span = attempts.start();
            match self.transaction(&mut f).instrument(span).await {
                Ok(v) => return Ok(v),
                Err(e) => attempts.failed(e).await?,
            }
        }
    }

    /// Runs SQL with no parameters (several statements allowed) outside any
    /// transaction; returns the rows affected. Meant for DDL and migrations;
    /// a statement with values is [`Db::execute_with`].
    pub async fn execute(&self, sql: &str) -> Result<u64> {
        on_pool!(&self.pool, |p, DB| execute_on(p, sql, self.lock_timeout)
            .await)
    }

    /// Closes every pooled connection, and the idle named-lock connections.
    pub async fn close(&self) {
        self.lock_conns.clear();
        on_pool!(&self.pool, |p, DB| p.pool.close().await);
    }
}

/// Runs `f` in `tx`, then commits; rolls back when `f` returns `Err` or
/// panics (the dropped transaction).
pub(crate) async fn run_in<'a, T, E, F>(mut tx: Tx<'a>, f: F) -> Result<T, E>
where
    F: for<'t> FnOnce(&'t mut Tx<'a>) -> BoxFuture<'t, Result<T, E>> + Send,
    E: From<Error> + Send,
    T: Send,
{
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

/// The attempts of one [`Db::retry`] (and of the queue's ledger
/// transactions): counts them, and after a failure decides between giving
/// up and waiting out the back-off.
pub(crate) struct Attempts {
    policy: RetryPolicy,
    metrics: Metrics,
    start: Instant,
    rng: fastrand::Rng,
    attempt: u32,
}

impl Attempts {
    pub(crate) fn new(db: &Db, policy: RetryPolicy) -> Attempts {
        Attempts {
            policy,
            metrics: db.metrics.clone(),
            start: Instant::now(),
            rng: fastrand::Rng::new(),
            attempt: 0,
        }
    }

    /// Counts a new attempt; returns its span.
    pub(crate) fn start(&mut self) -> tracing::Span {
        self.attempt += 1;
        if self.attempt > 1 {
            self.metrics.retry_attempt();
        }
        tracing::info_span!("safesync.retry.attempt", attempt = self.attempt)
    }

    /// After the attempt failed with `err`: `Err` to give up (`err`
    /// itself, or [`Error::RetriesExhausted`]), or `Ok` after the back-off
    /// for another attempt.
    pub(crate) async fn failed(&mut self, err: Error) -> Result<()> {
        let (policy, attempt) = (&self.policy, self.attempt);
        if !policy.retries(&err) {
            return Err(err);
        }
        let elapsed = self.start.elapsed();
        let delay = policy.backoff(attempt, &mut self.rng);
        if attempt >= policy.attempts() || elapsed + delay >= policy.elapsed_budget() {
            return Err(Error::RetriesExhausted {
                attempts: attempt,
                elapsed,
                last: Box::new(err),
            });
        }
        tracing::debug!(attempt, error = %err, ?delay, "retrying in a new transaction");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// [`Db::execute`] on backend `B`, behind its write gate if it has one.
async fn execute_on<B: Backend>(
    p: &BackendPool<B>,
    sql: &str,
    gate_timeout: Duration,
) -> Result<u64>
where
    for<'c> &'c mut B::Connection: sqlx::Executor<'c, Database = B>,
{
    let _gate = B::write_gate(&p.state, gate_timeout).await?;
    let done = sqlx::raw_sql(sql).execute(&p.pool).await?;
    Ok(B::rows_affected(&done))
}
