//! Named advisory locks across processes and hosts.
//!
//! | backend | mechanism |
//! |---|---|
//! | MySQL / MariaDB | `GET_LOCK` / `RELEASE_LOCK` on a dedicated connection; names over 64 bytes are hashed |
//! | PostgreSQL | session `pg_advisory_lock` on a dedicated connection, keyed by a stable 64-bit hash of the name |
//! | SQLite (file) | an OS file lock (`flock`) on a sidecar file next to the database, per name: it excludes every process that shares the database file, and the OS drops it when the holder dies |
//! | SQLite (memory) | an in-process lock, per name |
//!
//! The connection of a lock guard never comes from (or goes back to) the
//! pool: a pooled connection would keep the lock alive after the guard is
//! gone. A guard dropped without [`AdvisoryLock::release`], or whose future
//! was cancelled, closes its connection, and the server frees the lock.

#[cfg(feature = "sqlite")]
use std::collections::HashMap;
#[cfg(feature = "sqlite")]
use std::sync::OnceLock;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::tx::Tx;

/// Metric `kind` label of session-scoped named locks.
const KIND_SESSION: &str = "advisory";
/// Metric `kind` label of transaction-scoped named locks.
const KIND_XACT: &str = "advisory_xact";

/// How long to wait for a named lock, and how often a held lock checks that
/// its connection is still alive.
///
/// ```
/// use std::time::Duration;
/// use safesync_core::LockOptions;
///
/// let opts = LockOptions::new(Duration::from_secs(5)).ping_interval(Duration::from_millis(500));
/// assert_eq!(opts.timeout(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    timeout: Duration,
    ping_interval: Duration,
}

impl LockOptions {
    /// Wait at most `timeout` (zero: try once). The ping interval is 1 s.
    pub fn new(timeout: Duration) -> Self {
        LockOptions {
            timeout,
            ping_interval: Duration::from_secs(1),
        }
    }

    /// How often the guard checks its connection; a loss is reported within
    /// this interval.
    #[must_use]
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every.max(Duration::from_millis(10));
        self
    }

    /// The configured wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A stable 64-bit FNV-1a hash: every process, build and version maps a name
/// to the same key.
///
/// ```
/// assert_eq!(safesync_core::advisory_key("user:42"), safesync_core::advisory_key("user:42"));
/// assert_ne!(safesync_core::advisory_key("a"), safesync_core::advisory_key("b"));
/// ```
pub fn advisory_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// The name MySQL sees: itself up to 64 bytes, else a hash of it.
#[cfg(feature = "mysql")]
fn mysql_name(name: &str) -> String {
    if name.len() <= 64 {
        name.to_owned()
    } else {
        format!("safesync:{:016x}", advisory_key(name))
    }
}

/// A dedicated named-lock connection (never a pooled one), with what
/// safesync knows of it.
pub(crate) enum LockConn {
    /// MySQL/MariaDB, with its `CONNECTION_ID()`.
    #[cfg(feature = "mysql")]
    MySql {
        conn: sqlx::MySqlConnection,
        id: i64,
    },
    /// PostgreSQL, with its `pg_backend_pid()` and the `lock_timeout` last
    /// set on it.
    #[cfg(feature = "postgres")]
    Postgres {
        conn: sqlx::PgConnection,
        pid: i64,
        lock_timeout: Option<Duration>,
    },
}

/// Dedicated lock connections that hold no lock, kept for the next
/// acquisition so that taking a named lock costs one round trip, not a
/// connection (TCP and authentication). Only a connection whose lock was
/// released cleanly (`RELEASE_LOCK` = 1, `pg_advisory_unlock` = true), or
/// whose acquisition timed out, comes back here; one whose guard was dropped,
/// cancelled or lost is closed, so the server frees whatever it held.
#[derive(Clone)]
pub(crate) struct SpareConns {
    idle: Arc<StdMutex<Vec<LockConn>>>,
    max: usize,
}

impl std::fmt::Debug for SpareConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpareConns")
            .field("idle", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

impl SpareConns {
    pub(crate) fn new(max: usize) -> SpareConns {
        SpareConns {
            idle: Arc::default(),
            max,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<LockConn>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Idle connections kept right now.
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }

    #[cfg(any(feature = "mysql", feature = "postgres"))]
    fn take(&self) -> Option<LockConn> {
        self.slots().pop()
    }

    /// Keeps `conn` for reuse, or drops (closes) it when enough are kept.
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    fn put(&self, conn: LockConn) {
        let mut idle = self.slots();
        if idle.len() < self.max {
            idle.push(conn);
        }
    }

    /// Closes every kept connection.
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut *self.slots());
        drop(dropped);
    }
}

enum Session {
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlConnection, i64, String),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgConnection, i64, Option<Duration>, i64),
    #[cfg(feature = "sqlite")]
    File(FileLock),
    #[cfg(feature = "sqlite")]
    Memory(tokio::sync::OwnedMutexGuard<()>),
}

impl Session {
    /// True while the lock is still ours.
    async fn check(&mut self) -> bool {
        match self {
            #[cfg(feature = "mysql")]
            Session::MySql(conn, _, name) => {
                let r: std::result::Result<Option<i64>, _> =
                    sqlx::query_scalar("SELECT IS_USED_LOCK(?) = CONNECTION_ID()")
                        .bind(name.as_str())
                        .fetch_one(conn)
                        .await;
                matches!(r, Ok(Some(1)))
            }
            #[cfg(feature = "postgres")]
            Session::Postgres(conn, ..) => sqlx::Connection::ping(conn).await.is_ok(),
            #[cfg(feature = "sqlite")]
            Session::File(_) | Session::Memory(_) => true,
        }
    }

    /// Releases the lock; `false` when it was no longer held. A connection
    /// that released its lock cleanly goes to `spare`; any other is closed.
    async fn release(self, spare: &SpareConns) -> Result<bool> {
        let _ = spare;
        match self {
            #[cfg(feature = "mysql")]
            Session::MySql(mut conn, id, name) => {
                let r: Option<i64> = sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
                    .bind(name.as_str())
                    .fetch_one(&mut conn)
                    .await?;
                if r == Some(1) {
                    spare.put(LockConn::MySql { conn, id });
                    Ok(true)
                } else {
                    let _ = sqlx::Connection::close(conn).await;
                    Ok(false)
                }
            }
            #[cfg(feature = "postgres")]
            Session::Postgres(mut conn, pid, lock_timeout, key) => {
                let r: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await?;
                if r {
                    spare.put(LockConn::Postgres {
                        conn,
                        pid,
                        lock_timeout,
                    });
                } else {
                    let _ = sqlx::Connection::close(conn).await;
                }
                Ok(r)
            }
            #[cfg(feature = "sqlite")]
            Session::File(lock) => Ok(lock.unlock()),
            #[cfg(feature = "sqlite")]
            Session::Memory(guard) => {
                drop(guard);
                Ok(true)
            }
        }
    }

    /// Whether the lock can be lost with a connection, so a watcher must
    /// ping it.
    fn needs_watch(&self) -> bool {
        match self {
            #[cfg(feature = "mysql")]
            Session::MySql(..) => true,
            #[cfg(feature = "postgres")]
            Session::Postgres(..) => true,
            #[cfg(feature = "sqlite")]
            Session::File(_) | Session::Memory(_) => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "mysql")]
            Session::MySql(..) => "mysql_get_lock",
            #[cfg(feature = "postgres")]
            Session::Postgres(..) => "pg_advisory",
            #[cfg(feature = "sqlite")]
            Session::File(_) => "file",
            #[cfg(feature = "sqlite")]
            Session::Memory(_) => "memory",
        }
    }
}

/// A held named lock. Release it with [`release`](AdvisoryLock::release);
/// dropping it closes its connection, which frees the lock too.
///
/// The guard watches its connection: [`is_held`](AdvisoryLock::is_held)
/// turns false and [`lost`](AdvisoryLock::lost) resolves when the connection
/// dies (the server then frees the lock, so another process may hold it).
#[must_use = "the lock is released when the guard is dropped"]
pub struct AdvisoryLock {
    name: String,
    session: Arc<Mutex<Option<Session>>>,
    spare: SpareConns,
    held: watch::Receiver<bool>,
    /// Pings the connection (server backends; a file or in-process lock
    /// cannot be lost).
    watcher: Option<JoinHandle<()>>,
    /// The loss channel's sender (the watcher has a clone), kept so that
    /// `lost()` stays pending while the lock is held.
    _loss: watch::Sender<bool>,
    /// Released or dropped: the held time is recorded once.
    finished: bool,
    session_id: Option<i64>,
    kind: &'static str,
    acquired_at: Instant,
    metrics: Metrics,
    metric_kind: &'static str,
}

impl std::fmt::Debug for AdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLock")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("held", &*self.held.borrow())
            .finish_non_exhaustive()
    }
}

impl AdvisoryLock {
    #[allow(clippy::too_many_arguments)] // reason: private constructor of one struct
    fn start(
        name: &str,
        session: Session,
        spare: SpareConns,
        session_id: Option<i64>,
        ping: Duration,
        metrics: Metrics,
        metric_kind: &'static str,
    ) -> Self {
        let kind = session.kind();
        let can_be_lost = session.needs_watch();
        let session = Arc::new(Mutex::new(Some(session)));
        let (tx, rx) = watch::channel(true);
        let watcher = can_be_lost.then(|| {
            Self::watch(
                Arc::clone(&session),
                tx.clone(),
                ping,
                name.to_owned(),
                metrics.clone(),
                metric_kind,
            )
        });
        AdvisoryLock {
            name: name.to_owned(),
            session,
            spare,
            held: rx,
            _loss: tx,
            watcher,
            finished: false,
            session_id,
            kind,
            acquired_at: Instant::now(),
            metrics,
            metric_kind,
        }
    }

    /// Pings the session every `ping`; on a failed check drops it (closing
    /// the connection) and reports the loss.
    fn watch(
        session_for_pings: Arc<Mutex<Option<Session>>>,
        tx: watch::Sender<bool>,
        ping: Duration,
        lock_name: String,
        lost_metrics: Metrics,
        metric_kind: &'static str,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ping);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut guard = session_for_pings.lock().await;
                let Some(s) = guard.as_mut() else { return };
                if !s.check().await {
                    // Dropping the session closes the connection for good.
                    guard.take();
                    tracing::warn!(lock = %lock_name, "named lock lost: its connection is gone");
                    lost_metrics.lock_lost(metric_kind);
                    let _ = tx.send(false);
                    return;
                }
            }
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database session holding the lock: MySQL's `CONNECTION_ID()`,
    /// Postgres's `pg_backend_pid()`; `None` on SQLite.
    pub fn session_id(&self) -> Option<i64> {
        self.session_id
    }

    /// False once the guard has seen its connection die.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves when the lock is lost (at once if it already is). Race your
    /// work against it with `tokio::select!` to stop when exclusivity ends.
    pub async fn lost(&self) -> Error {
        let mut rx = self.held.clone();
        let _ = rx.wait_for(|held| !*held).await;
        Error::LockLost {
            name: self.name.clone(),
        }
    }

    /// How long the lock has been held.
    pub fn held_for(&self) -> Duration {
        self.acquired_at.elapsed()
    }

    /// Releases the lock and closes its connection.
    /// [`Error::LockLost`] when it had been lost before.
    pub async fn release(mut self) -> Result<()> {
        self.finish();
        let session = self.session.lock().await.take();
        let still_held = match session {
            Some(s) => s.release(&self.spare).await?,
            None => false,
        };
        if still_held {
            Ok(())
        } else {
            Err(Error::LockLost {
                name: self.name.clone(),
            })
        }
    }
}

impl AdvisoryLock {
    /// Stops the watcher and records the held time, once.
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            if let Some(w) = self.watcher.take() {
                w.abort();
            }
            self.metrics
                .lock_held(self.metric_kind, self.acquired_at.elapsed());
        }
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        self.finish();
        // The session (and its connection) is dropped with the last Arc:
        // the socket closes and the server frees the lock. Nothing goes
        // back to a pool.
    }
}

#[cfg(feature = "sqlite")]
fn memory_lock(name: &str) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<StdMutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let map = LOCKS.get_or_init(Default::default);
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(name.to_owned()).or_default())
}

#[cfg(feature = "sqlite")]
async fn sqlite_lock(
    path: Option<std::path::PathBuf>,
    name: &str,
    timeout: Duration,
) -> Result<Option<Session>> {
    let Some(db_path) = path else {
        let m = memory_lock(name);
        let guard = if timeout.is_zero() {
            m.try_lock_owned().ok()
        } else {
            tokio::time::timeout(timeout, m.lock_owned()).await.ok()
        };
        return Ok(guard.map(Session::Memory));
    };
    let lock_path = {
        let mut p = db_path.into_os_string();
        p.push(format!(".lock-{:016x}", advisory_key(name)));
        std::path::PathBuf::from(p)
    };
    let deadline = Instant::now() + timeout;
    // This process's holders of the same file queue here; other
    // processes (and other open files) are kept out by the file lock.
    let slot = lock_file_slot(&lock_path);
    let guard = if timeout.is_zero() {
        slot.try_lock_owned().ok()
    } else {
        tokio::time::timeout(timeout, slot.lock_owned()).await.ok()
    };
    let Some(mut guard) = guard else {
        return Ok(None);
    };
    if guard.is_none() {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::Config(format!(
                    "cannot open lock file {}: {e}",
                    lock_path.display()
                ))
            })?;
        *guard = Some(file);
    }
    let lock = FileLock { slot: guard };
    let mut pause = Duration::from_millis(1);
    loop {
        match lock.try_lock() {
            Ok(true) => return Ok(Some(Session::File(lock))),
            Ok(false) => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Lock files kept open per process, beyond those in use.
#[cfg(feature = "sqlite")]
const KEPT_LOCK_FILES: usize = 64;

/// This process's open lock file of `path` (opened on first use), behind
/// an async mutex. Lock files stay open between locks, so a lock costs a
/// `flock`, not an `open` and a `close`; idle ones beyond
/// [`KEPT_LOCK_FILES`] are closed.
#[cfg(feature = "sqlite")]
fn lock_file_slot(path: &std::path::Path) -> Arc<Mutex<Option<std::fs::File>>> {
    type Slots = HashMap<std::path::PathBuf, Arc<Mutex<Option<std::fs::File>>>>;
    static SLOTS: OnceLock<StdMutex<Slots>> = OnceLock::new();
    let mut slots = SLOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(slot) = slots.get(path) {
        return Arc::clone(slot);
    }
    if slots.len() >= KEPT_LOCK_FILES {
        // Only the map holds an idle slot: dropping it closes the file.
        slots.retain(|_, slot| Arc::strong_count(slot) > 1);
    }
    Arc::clone(slots.entry(path.to_path_buf()).or_default())
}

/// A held file lock: this process's open lock file, locked with `flock`.
/// Dropping it unlocks the file, which stays open for the next lock.
#[cfg(feature = "sqlite")]
pub(crate) struct FileLock {
    slot: tokio::sync::OwnedMutexGuard<Option<std::fs::File>>,
}

#[cfg(feature = "sqlite")]
impl FileLock {
    /// `Ok(false)` when another open file (another process) holds it.
    fn try_lock(&self) -> std::io::Result<bool> {
        let Some(file) = self.slot.as_ref() else {
            return Ok(false);
        };
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Unlocks; false when that failed.
    fn unlock(&self) -> bool {
        self.slot.as_ref().is_some_and(|f| f.unlock().is_ok())
    }
}

#[cfg(feature = "sqlite")]
impl Drop for FileLock {
    fn drop(&mut self) {
        // Unlocking a file that is not locked does nothing.
        let _ = self.unlock();
    }
}

impl Db {
    /// Takes the named lock, waiting up to `timeout` (zero: try once);
    /// [`Error::LockTimeout`] when it stays busy. There is no wait-forever.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let guard = db.advisory_lock("nightly-report", Duration::from_secs(1)).await?;
    /// assert!(db.try_advisory_lock("nightly-report").await?.is_none());
    /// guard.release().await?;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn advisory_lock(&self, name: &str, timeout: Duration) -> Result<AdvisoryLock> {
        self.advisory_lock_with(name, LockOptions::new(timeout))
            .await?
            .ok_or_else(|| Error::LockTimeout {
                name: name.to_owned(),
                waited: timeout,
            })
    }

    /// Takes the named lock if it is free right now.
    pub async fn try_advisory_lock(&self, name: &str) -> Result<Option<AdvisoryLock>> {
        self.advisory_lock_with(name, LockOptions::new(Duration::ZERO))
            .await
    }

    /// Takes the named lock with explicit options; `Ok(None)` when it stayed
    /// busy for the whole timeout.
    pub async fn advisory_lock_with(
        &self,
        name: &str,
        options: LockOptions,
    ) -> Result<Option<AdvisoryLock>> {
        self.acquire_named(name, options, KIND_SESSION).await
    }

    async fn acquire_named(
        &self,
        name: &str,
        options: LockOptions,
        metric_kind: &'static str,
    ) -> Result<Option<AdvisoryLock>> {
        let started = Instant::now();
        let span = tracing::debug_span!(
            "safesync.lock.acquire",
            kind = metric_kind,
            lock = name,
            outcome = tracing::field::Empty
        );
        let acquired = tracing::Instrument::instrument(
            self.acquire_session(name, options.timeout),
            span.clone(),
        )
        .await;
        let outcome = match &acquired {
            Ok(Some(_)) => "acquired",
            Ok(None) => "timeout",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        self.metrics()
            .lock_acquired(metric_kind, outcome, started.elapsed());
        Ok(acquired?.map(|(session, id)| {
            AdvisoryLock::start(
                name,
                session,
                self.lock_conns().clone(),
                id,
                options.ping_interval,
                self.metrics().clone(),
                metric_kind,
            )
        }))
    }

    async fn acquire_session(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<(Session, Option<i64>)>> {
        #[cfg(feature = "sqlite")]
        if let Some(pool) = self.as_sqlite() {
            let opts = pool.connect_options();
            let path = opts.get_filename();
            let memory = path.as_os_str().to_string_lossy().contains("memory")
                || path.as_os_str() == ":memory:";
            let path = (!memory).then(|| path.to_path_buf());
            return Ok(sqlite_lock(path, name, timeout).await?.map(|s| (s, None)));
        }
        #[cfg(feature = "mysql")]
        if let Some(pool) = self.as_mysql() {
            let lock_name = mysql_name(name);
            let mut spare = self.lock_conns().take();
            loop {
                let reused = spare.is_some();
                let (mut conn, id) = if let Some(LockConn::MySql { conn, id }) = spare.take() {
                    (conn, id)
                } else {
                    let mut conn: sqlx::MySqlConnection =
                        sqlx::ConnectOptions::connect(&*pool.connect_options()).await?;
                    let id: i64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
                        .fetch_one(&mut conn)
                        .await?;
                    (conn, id)
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
                    Ok(Some(1)) => Ok(Some((Session::MySql(conn, id, lock_name), Some(id)))),
                    Ok(Some(_)) => {
                        self.lock_conns().put(LockConn::MySql { conn, id });
                        Ok(None)
                    }
                    Ok(None) => Err(Error::Config(format!(
                        "GET_LOCK('{lock_name}') returned NULL: the server could not take the lock"
                    ))),
                };
            }
        }
        #[cfg(feature = "postgres")]
        if let Some(pool) = self.as_postgres() {
            let key = advisory_key(name);
            let mut spare = self.lock_conns().take();
            loop {
                let reused = spare.is_some();
                let (mut conn, pid, mut set) = if let Some(LockConn::Postgres {
                    conn,
                    pid,
                    lock_timeout,
                }) = spare.take()
                {
                    (conn, pid, lock_timeout)
                } else {
                    let mut conn: sqlx::PgConnection =
                        sqlx::ConnectOptions::connect(&*pool.connect_options()).await?;
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(&mut conn)
                        .await?;
                    (conn, i64::from(pid), None)
                };
                match pg_session_lock(&mut conn, key, timeout, &mut set).await {
                    Err(e) if reused => {
                        tracing::debug!(error = %e, "a kept lock connection failed; opening a new one");
                    }
                    Err(e) => return Err(e),
                    Ok(true) => {
                        return Ok(Some((Session::Postgres(conn, pid, set, key), Some(pid))));
                    }
                    Ok(false) => {
                        self.lock_conns().put(LockConn::Postgres {
                            conn,
                            pid,
                            lock_timeout: set,
                        });
                        return Ok(None);
                    }
                }
            }
        }
        Err(Error::Config(
            "no backend available for advisory locks".into(),
        ))
    }
}

/// `pg_advisory_lock` bounded by the session's `lock_timeout`, which is set
/// only when it differs from what `set` says the connection has (the
/// connection is dedicated, so the setting stays ours);
/// `pg_try_advisory_lock` for a zero timeout. `Ok(false)`: still busy.
#[cfg(feature = "postgres")]
async fn pg_session_lock(
    conn: &mut sqlx::PgConnection,
    key: i64,
    timeout: Duration,
    set: &mut Option<Duration>,
) -> Result<bool> {
    if timeout.is_zero() {
        return Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?);
    }
    if *set != Some(timeout) {
        *set = None;
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{}ms", timeout.as_millis().max(1)))
            .execute(&mut *conn)
            .await?;
        *set = Some(timeout);
    }
    match sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                crate::dialect::classify(&e),
                Some(
                    crate::dialect::DbErrorKind::LockWaitTimeout
                        | crate::dialect::DbErrorKind::LockNotAvailable
                )
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Releases the transaction-scoped locks of a finished transaction.
pub(crate) async fn release_all(locks: Vec<AdvisoryLock>) {
    for lock in locks {
        let name = lock.name.clone();
        if let Err(e) = lock.release().await {
            tracing::warn!(lock = %name, error = %e, "transaction-scoped named lock was lost before commit/rollback");
        }
    }
}

impl Tx<'_> {
    /// Takes a named lock until this transaction commits or rolls back,
    /// waiting up to `timeout` ([`Error::LockTimeout`] when busy).
    ///
    /// PostgreSQL: `pg_advisory_xact_lock`, released by the server at the
    /// end of the transaction (a savepoint keeps the transaction usable after
    /// a timeout). MySQL/MariaDB and SQLite have no transaction-scoped named
    /// locks: safesync takes a session lock ([`Db::advisory_lock`]) and
    /// releases it right after commit or rollback; a transaction dropped
    /// without either closes the lock's connection, which frees it too.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let mut tx = db.begin().await?;
    /// tx.advisory_xact_lock("invoice:7", Duration::from_secs(1)).await?;
    /// tx.commit().await?; // the lock is free again
    /// assert!(db.try_advisory_lock("invoice:7").await?.is_some());
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn advisory_xact_lock(&mut self, name: &str, timeout: Duration) -> Result<()> {
        #[cfg(feature = "postgres")]
        if let Some(conn) = self.as_postgres() {
            let started = Instant::now();
            let got = pg_xact_lock(conn, advisory_key(name), timeout).await;
            let outcome = match &got {
                Ok(true) => "acquired",
                Ok(false) => "timeout",
                Err(_) => "error",
            };
            self.metrics
                .lock_acquired(KIND_XACT, outcome, started.elapsed());
            return if got? {
                Ok(())
            } else {
                Err(Error::LockTimeout {
                    name: name.to_owned(),
                    waited: timeout,
                })
            };
        }
        let db = self.db.clone();
        let lock = db
            .acquire_named(name, LockOptions::new(timeout), KIND_XACT)
            .await?
            .ok_or_else(|| Error::LockTimeout {
                name: name.to_owned(),
                waited: timeout,
            })?;
        self.xact_locks.push(lock);
        Ok(())
    }
}

/// `pg_advisory_xact_lock` bounded by `lock_timeout`, under a savepoint so a
/// timeout does not abort the caller's transaction.
#[cfg(feature = "postgres")]
async fn pg_xact_lock(conn: &mut sqlx::PgConnection, key: i64, timeout: Duration) -> Result<bool> {
    use sqlx::Executor as _;
    if timeout.is_zero() {
        return Ok(sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?);
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
            // Restore the caller's lock_timeout for the rest of the transaction
            // (a rollback to the savepoint would have restored it by itself).
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(previous)
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }
        Err(e) => {
            (&mut *conn)
                .execute("ROLLBACK TO SAVEPOINT safesync_xact_lock")
                .await?;
            if matches!(
                crate::dialect::classify(&e),
                Some(
                    crate::dialect::DbErrorKind::LockWaitTimeout
                        | crate::dialect::DbErrorKind::LockNotAvailable
                )
            ) {
                Ok(false)
            } else {
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::advisory_key;

    #[test]
    fn advisory_keys_are_stable_across_builds() {
        // FNV-1a 64 of "user:42", fixed forever: every process agrees.
        assert_eq!(
            advisory_key(""),
            i64::from_ne_bytes(0xcbf2_9ce4_8422_2325u64.to_ne_bytes())
        );
        assert_eq!(advisory_key("user:42"), advisory_key("user:42"));
        assert_ne!(advisory_key("user:42"), advisory_key("user:43"));
    }
}
