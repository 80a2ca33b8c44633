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
//!
//! Every acquisition with [`Db::advisory_lock`] gets a fencing token
//! ([`AdvisoryLock::token`]) that [`Tx::fence`] checks; `fence` narrates
//! the protocol.
//!
//! Files: this one has the guard and the entry points; `spare` keeps idle
//! lock connections, `watch` pings a held lock's connection, `file` is
//! SQLite's file and in-process locks, `fence` issues and checks fencing
//! tokens; each server backend's session and fence SQL live in its backend
//! file.

mod fence;
#[cfg(feature = "sqlite")]
pub(crate) mod file;
mod list;
mod spare;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
use tokio::sync::{Mutex, watch as channel};
use tokio::task::JoinHandle;

pub use self::list::HeldNamedLock;
pub(crate) use self::spare::SpareConns;
use crate::backend::{Backend, XactLock, on_pool, on_tx};
use crate::db::{Db, check_wait};
use crate::error::{Error, LockWait, Result};
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
    /// Wait at most `timeout` (zero: try once; at most about 24.8 days,
    /// longer is [`Error::Config`] when the lock is taken). The ping
    /// interval is 1 s.
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

/// A held named lock as its backend keeps it.
pub(crate) trait LockSession: Send + 'static {
    /// True while the lock is still ours.
    fn check(&mut self) -> BoxFuture<'_, bool>;
    /// Releases the lock; `false` when it was no longer held. A connection
    /// that released its lock cleanly goes to `spare`; any other is closed.
    fn release(self: Box<Self>, spare: &SpareConns) -> BoxFuture<'_, Result<bool>>;
    /// Whether the lock can be lost with a connection, so a watcher must
    /// ping it.
    fn can_be_lost(&self) -> bool;
    /// The mechanism, for `Debug`.
    fn kind(&self) -> &'static str;
}

/// A backend's held lock.
pub(crate) type Session = Box<dyn LockSession>;

/// What a backend's [`Backend::lock_named`] took.
pub(crate) struct Held {
    pub(crate) session: Session,
    /// The server's session id, if any.
    pub(crate) id: Option<i64>,
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
    held: channel::Receiver<bool>,
    /// Pings the connection (server backends; a file or in-process lock
    /// cannot be lost).
    watcher: Option<JoinHandle<()>>,
    /// The loss channel's sender (the watcher has a clone), kept so that
    /// `lost()` stays pending while the lock is held.
    _loss: channel::Sender<bool>,
    /// Released or dropped: the held time is recorded once.
    finished: bool,
    session_id: Option<i64>,
    kind: &'static str,
    acquired_at: Instant,
    metrics: Metrics,
    metric_kind: &'static str,
    /// The fencing token of this acquisition (0 for the session behind a
    /// transaction-scoped lock, which has none and is never handed out).
    token: u64,
}

impl std::fmt::Debug for AdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLock")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("token", &self.token)
            .field("held", &*self.held.borrow())
            .finish_non_exhaustive()
    }
}

impl AdvisoryLock {
    fn start(
        name: &str,
        (held, token): (Held, u64),
        db: &Db,
        ping: Duration,
        metric_kind: &'static str,
    ) -> Self {
        let kind = held.session.kind();
        let can_be_lost = held.session.can_be_lost();
        let session = Arc::new(Mutex::new(Some(held.session)));
        let (tx, rx) = channel::channel(true);
        let watcher = can_be_lost.then(|| {
            watch::spawn(
                Arc::clone(&session),
                tx.clone(),
                ping,
                watch::Report {
                    lock_name: name.to_owned(),
                    metrics: db.metrics().clone(),
                    metric_kind,
                },
            )
        });
        AdvisoryLock {
            name: name.to_owned(),
            session,
            spare: db.lock_conns().clone(),
            held: rx,
            _loss: tx,
            watcher,
            finished: false,
            session_id: held.id,
            kind,
            acquired_at: Instant::now(),
            metrics: db.metrics().clone(),
            metric_kind,
            token,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This acquisition's fencing token: greater than every token issued
    /// before for this name, by any process on any host that uses the same
    /// database (it is kept there, in the table `safesync_fence`). Check it
    /// with [`Tx::fence`] in the transaction that writes what the lock
    /// protects.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let first = db.advisory_lock("nightly-report", Duration::from_secs(1)).await?;
    /// let token = first.token();
    /// first.release().await?;
    /// let second = db.advisory_lock("nightly-report", Duration::from_secs(1)).await?;
    /// assert!(second.token() > token);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn token(&self) -> u64 {
        self.token
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

/// `Err` for a name or timeout no backend can take: an empty name, or a
/// wait longer than [`check_wait`] allows.
fn check_request(name: &str, timeout: Duration) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Config(
            "a named lock needs a non-empty name".to_owned(),
        ));
    }
    check_wait("the named-lock timeout", timeout)
}

fn timed_out(name: &str, timeout: Duration) -> Error {
    Error::LockTimeout {
        name: name.to_owned(),
        waited: timeout,
        what: LockWait::Named,
    }
}

impl Db {
    /// Takes the named lock, waiting up to `timeout` (zero: try once);
    /// [`Error::LockTimeout`] when it stays busy. There is no wait-forever.
    ///
    /// Once the lock is taken, its fencing token
    /// ([`AdvisoryLock::token`]) is issued in a short transaction on this
    /// `Db` (creating the table `safesync_fence` the first time). That
    /// transaction waits for fenced transactions of earlier holders
    /// ([`Tx::fence`]) to end, at most this `Db`'s
    /// [`lock_timeout`](crate::DbOptions::lock_timeout); if it fails, the
    /// lock is released and the error returned. On SQLite it is a write,
    /// so it waits for the database's write lock: do not hold a
    /// transaction of the same `Db` open while taking a named lock there.
    ///
    /// An empty name, or a timeout over about 24.8 days, is
    /// [`Error::Config`] on every backend.
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
            .ok_or_else(|| timed_out(name, timeout))
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
        check_request(name, options.timeout)?;
        let started = Instant::now();
        let span = tracing::debug_span!(
            "safesync.lock.acquire",
            kind = metric_kind,
            lock = name,
            token = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let timeout = options.timeout;
        let acquired = tracing::Instrument::instrument(
            async {
                let held = on_pool!(self.pool(), |p, DB| {
                    <DB as Backend>::lock_named(self, &p.pool, name, timeout).await
                })?;
                match held {
                    None => Ok(None),
                    // A transaction-scoped lock has no guard to fence with.
                    Some(held) if metric_kind == KIND_XACT => Ok(Some((held, 0))),
                    Some(held) => self.issue_token(name, held).await.map(Some),
                }
            },
            span.clone(),
        )
        .await;
        if let Ok(Some((_, token))) = &acquired {
            span.record("token", token);
        }
        let outcome = match &acquired {
            Ok(Some(_)) => "acquired",
            Ok(None) => "timeout",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        self.metrics()
            .lock_acquired(metric_kind, outcome, started.elapsed());
        Ok(acquired?
            .map(|held| AdvisoryLock::start(name, held, self, options.ping_interval, metric_kind)))
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
        check_request(name, timeout)?;
        let started = Instant::now();
        let got = on_tx!(self, |conn, DB| {
            <DB as Backend>::lock_xact(conn, name, timeout).await
        });
        let outcome = match &got {
            Ok(XactLock::Taken) => "acquired",
            Ok(XactLock::Busy) => "timeout",
            Ok(XactLock::UseSession) => {
                let db = self.db.clone();
                let lock = db
                    .acquire_named(name, LockOptions::new(timeout), KIND_XACT)
                    .await?
                    .ok_or_else(|| timed_out(name, timeout))?;
                self.xact_locks.push(lock);
                return Ok(());
            }
            Err(_) => "error",
        };
        self.metrics
            .lock_acquired(KIND_XACT, outcome, started.elapsed());
        match got? {
            XactLock::Busy => Err(timed_out(name, timeout)),
            XactLock::Taken | XactLock::UseSession => Ok(()),
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
