//! Prometheus metrics: what a [`Db`](crate::Db) counts and times.
//!
//! Recording never fails and never panics: a metric that cannot be recorded
//! is skipped. Only [`Metrics::register`] reports errors.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::error::{Error, Result};

/// Buckets of the write and lock-acquire latencies, in seconds: 0.5 ms to
/// 10 s, a local SQLite write and a contended network round trip alike.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of how long a lock is held, in seconds: 1 ms to 10 min.
const HELD_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// safesync's Prometheus collectors, shared by every clone (an `Arc`
/// inside, so cloning is cheap).
///
/// A [`Db`](crate::Db) records into [`Metrics::global`] unless given another
/// instance with [`DbOptions::metrics`](crate::DbOptions::metrics) or
/// [`Db::with_metrics`](crate::Db::with_metrics). The collectors and their
/// names are a stable contract:
///
/// | name | type | labels |
/// | --- | --- | --- |
/// | `safesync_db_write_total` | counter | `table`, `op`, `outcome` |
/// | `safesync_db_write_latency_seconds` | histogram | `table`, `op`, `outcome` |
/// | `safesync_occ_conflicts_total` | counter | `table` |
/// | `safesync_retry_attempts_total` | counter | none |
/// | `safesync_lock_acquire_latency_seconds` | histogram | `kind`, `outcome` |
/// | `safesync_lock_held_seconds` | histogram | `kind` |
/// | `safesync_lock_lost_total` | counter | `kind` |
/// | `safesync_lock_fenced_total` | counter | `kind` |
///
/// - `op` is `insert`, `insert_idempotent`, `update` or `delete`; `outcome`
///   is `ok`, `conflict`, `not_found`, `duplicate`, `already_exists` or
///   `error`.
/// - `safesync_occ_conflicts_total` counts versioned `update`s and `delete`s
///   that found the row at another version.
/// - `safesync_retry_attempts_total` counts the attempts of
///   [`Db::retry`](crate::Db::retry) after the first one: a run that
///   succeeds at its third attempt adds 2. It has no labels, as a retry
///   loop does not know which table its work touches.
/// - Row locks have `kind` `row` (`lock`), `row_nowait` (`lock_nowait`) and
///   `row_skip_locked` (`lock_skip_locked`), with `outcome` `acquired`,
///   `busy` (`lock_nowait` found the row held), `skipped` (`lock_skip_locked`
///   found the row absent or held), `absent` (no such row), `timeout` (the
///   database gave up waiting) or `error`.
/// - `safesync_lock_fenced_total` counts [`Tx::fence`](crate::Tx::fence)
///   calls that found a newer token of the lock ([`Error::Fenced`]).
///
/// Recording never fails a database call and never panics.
///
/// ```
/// use safesync_core::{Db, DbOptions, Metrics};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let registry = prometheus::Registry::new();
/// let metrics = Metrics::register(&registry)?;
/// let db = Db::connect_with("sqlite::memory:", DbOptions::default().metrics(metrics)).await?;
/// # let _ = db;
/// // Serve `registry.gather()` with `prometheus::TextEncoder` on /metrics.
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Collectors>,
}

struct Collectors {
    writes: IntCounterVec,
    write_latency: HistogramVec,
    conflicts: IntCounterVec,
    retries: IntCounter,
    lock_acquire: HistogramVec,
    lock_held: HistogramVec,
    lock_lost: IntCounterVec,
    lock_fenced: IntCounterVec,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A record write, the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOp {
    Insert,
    InsertIdempotent,
    Update,
    Delete,
}

impl WriteOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WriteOp::Insert => "insert",
            WriteOp::InsertIdempotent => "insert_idempotent",
            WriteOp::Update => "update",
            WriteOp::Delete => "delete",
        }
    }
}

/// How a record write ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    Ok,
    Conflict,
    NotFound,
    Duplicate,
    AlreadyExists,
    Error,
}

impl WriteOutcome {
    /// The outcome of a failed write.
    pub(crate) fn of_error(err: &Error) -> Self {
        match err {
            Error::Conflict { .. } => WriteOutcome::Conflict,
            Error::NotFound { .. } => WriteOutcome::NotFound,
            Error::Duplicate { .. } => WriteOutcome::Duplicate,
            _ => WriteOutcome::Error,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WriteOutcome::Ok => "ok",
            WriteOutcome::Conflict => "conflict",
            WriteOutcome::NotFound => "not_found",
            WriteOutcome::Duplicate => "duplicate",
            WriteOutcome::AlreadyExists => "already_exists",
            WriteOutcome::Error => "error",
        }
    }
}

impl Collectors {
    /// Builds the collectors. Only fails on an invalid name, label or
    /// bucket list, which the constants here rule out.
    fn new() -> prometheus::Result<Collectors> {
        let latency = |name: &str, help: &str, buckets: &[f64]| {
            HistogramOpts::new(name, help).buckets(buckets.to_vec())
        };
        Ok(Collectors {
            writes: IntCounterVec::new(
                Opts::new(
                    "safesync_db_write_total",
                    "Record writes, by table, operation and outcome.",
                ),
                &["table", "op", "outcome"],
            )?,
            write_latency: HistogramVec::new(
                latency(
                    "safesync_db_write_latency_seconds",
                    "Latency of record writes in seconds, by table, operation and outcome.",
                    LATENCY_BUCKETS,
                ),
                &["table", "op", "outcome"],
            )?,
            conflicts: IntCounterVec::new(
                Opts::new(
                    "safesync_occ_conflicts_total",
                    "Versioned updates and deletes that lost to another writer, by table.",
                ),
                &["table"],
            )?,
            retries: IntCounter::new(
                "safesync_retry_attempts_total",
                "Attempts of Db::retry after the first one.",
            )?,
            lock_acquire: HistogramVec::new(
                latency(
                    "safesync_lock_acquire_latency_seconds",
                    "Time spent acquiring a lock in seconds, by lock kind and outcome.",
                    LATENCY_BUCKETS,
                ),
                &["kind", "outcome"],
            )?,
            lock_held: HistogramVec::new(
                latency(
                    "safesync_lock_held_seconds",
                    "Time a lock was held in seconds, by lock kind.",
                    HELD_BUCKETS,
                ),
                &["kind"],
            )?,
            lock_lost: IntCounterVec::new(
                Opts::new(
                    "safesync_lock_lost_total",
                    "Held locks that were lost, by lock kind.",
                ),
                &["kind"],
            )?,
            lock_fenced: IntCounterVec::new(
                Opts::new(
                    "safesync_lock_fenced_total",
                    "Fenced transactions that found a newer token of their named lock, by lock kind.",
                ),
                &["kind"],
            )?,
        })
    }

    fn boxed(&self) -> [Box<dyn Collector>; 8] {
        [
            Box::new(self.writes.clone()),
            Box::new(self.write_latency.clone()),
            Box::new(self.conflicts.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.lock_acquire.clone()),
            Box::new(self.lock_held.clone()),
            Box::new(self.lock_lost.clone()),
            Box::new(self.lock_fenced.clone()),
        ]
    }
}

fn register_err(e: &prometheus::Error) -> Error {
    Error::Config(format!("cannot register safesync metrics: {e}"))
}

impl Metrics {
    /// Creates the collectors and registers them on `registry`.
    ///
    /// All or nothing: when one collector cannot be registered (most often
    /// because the registry already has one of the same name, say from an
    /// earlier call), those registered so far are unregistered again and
    /// the answer is [`Error::Config`] naming the clash.
    ///
    /// ```
    /// use safesync_core::Metrics;
    ///
    /// let registry = prometheus::Registry::new();
    /// let metrics = Metrics::register(&registry)?;
    /// assert!(Metrics::register(&registry).is_err(), "names are taken");
    /// # let _ = metrics;
    /// # Ok::<_, safesync_core::Error>(())
    /// ```
    pub fn register(registry: &Registry) -> Result<Metrics> {
        let collectors = Collectors::new().map_err(|e| register_err(&e))?;
        for (i, collector) in collectors.boxed().into_iter().enumerate() {
            if let Err(e) = registry.register(collector) {
                // Registries match collectors by their descriptors, so fresh
                // handles unregister the ones registered above.
                for done in collectors.boxed().into_iter().take(i) {
                    let _ = registry.unregister(done);
                }
                return Err(register_err(&e));
            }
        }
        Ok(Metrics {
            inner: Arc::new(collectors),
        })
    }

    /// The process-wide instance, registered once on
    /// [`prometheus::default_registry`] on first use. Every
    /// [`Db`](crate::Db) not given other metrics records here.
    ///
    /// Should the default registry already hold collectors of the same
    /// names, the instance still counts but is not exported, and a warning
    /// is logged once.
    ///
    /// ```
    /// use safesync_core::Metrics;
    ///
    /// let m = Metrics::global();
    /// # let _ = m;
    /// let names: Vec<String> =
    ///     prometheus::gather().iter().map(|f| f.name().to_owned()).collect();
    /// // Families show up once they have a sample; the retry counter always has one.
    /// assert!(names.iter().any(|n| n == "safesync_retry_attempts_total"));
    /// ```
    pub fn global() -> Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                Metrics::register(prometheus::default_registry()).unwrap_or_else(|e| {
                    tracing::warn!(
                        error = %e,
                        "safesync metrics are not exported: the default Prometheus registry refused them"
                    );
                    Metrics::unregistered()
                })
            })
            .clone()
    }

    /// Collectors on no registry: they count, nobody scrapes them.
    fn unregistered() -> Metrics {
        let collectors = Collectors::new()
            .expect("safesync's metric names, labels and buckets are valid constants");
        Metrics {
            inner: Arc::new(collectors),
        }
    }

    /// Counts and times one record write (and a conflict, when it was one).
    pub(crate) fn write(&self, table: &str, op: WriteOp, outcome: WriteOutcome, latency: Duration) {
        let labels = [table, op.as_str(), outcome.as_str()];
        if let Ok(c) = self.inner.writes.get_metric_with_label_values(&labels) {
            c.inc();
        }
        if let Ok(h) = self
            .inner
            .write_latency
            .get_metric_with_label_values(&labels)
        {
            h.observe(latency.as_secs_f64());
        }
        if outcome == WriteOutcome::Conflict
            && let Ok(c) = self.inner.conflicts.get_metric_with_label_values(&[table])
        {
            c.inc();
        }
    }

    /// Counts one retry attempt (an attempt after the first).
    pub(crate) fn retry_attempt(&self) {
        self.inner.retries.inc();
    }

    /// Times one lock acquisition of `kind` that ended with `outcome`
    /// (`acquired`, `busy`, `timeout`, `error`, …).
    pub(crate) fn lock_acquired(&self, kind: &str, outcome: &str, latency: Duration) {
        if let Ok(h) = self
            .inner
            .lock_acquire
            .get_metric_with_label_values(&[kind, outcome])
        {
            h.observe(latency.as_secs_f64());
        }
    }

    /// Records how long a lock of `kind` was held, when it is released.
    #[allow(dead_code)] // reason: recorded by the advisory locks, which may be compiled out
    pub(crate) fn lock_held(&self, kind: &str, held: Duration) {
        if let Ok(h) = self.inner.lock_held.get_metric_with_label_values(&[kind]) {
            h.observe(held.as_secs_f64());
        }
    }

    /// Counts a held lock of `kind` that was lost (its session died).
    #[allow(dead_code)] // reason: recorded by the advisory locks, which may be compiled out
    pub(crate) fn lock_lost(&self, kind: &str) {
        if let Ok(c) = self.inner.lock_lost.get_metric_with_label_values(&[kind]) {
            c.inc();
        }
    }

    /// Counts a fenced transaction of a lock of `kind` that found a newer
    /// token.
    pub(crate) fn lock_fenced(&self, kind: &str) {
        if let Ok(c) = self.inner.lock_fenced.get_metric_with_label_values(&[kind]) {
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::{IntCounter, Registry};

    use super::{Metrics, WriteOp, WriteOutcome};

    fn scrape(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap()
    }

    #[test]
    fn collectors_are_valid() {
        let _ = Metrics::unregistered();
    }

    #[test]
    fn registering_twice_is_an_error() {
        let registry = Registry::new();
        let _m = Metrics::register(&registry).unwrap();
        let err = Metrics::register(&registry).unwrap_err();
        assert!(
            err.to_string().contains("cannot register safesync metrics"),
            "{err}"
        );
    }

    #[test]
    fn a_clash_leaves_nothing_registered() {
        let registry = Registry::new();
        // Clashes with the fourth collector, after three were registered.
        // Same help text: a registry remembers each name's help and labels
        // even after unregistering, so only an identical twin can leave.
        let squatter = IntCounter::new(
            "safesync_retry_attempts_total",
            "Attempts of Db::retry after the first one.",
        )
        .unwrap();
        registry.register(Box::new(squatter.clone())).unwrap();
        assert!(Metrics::register(&registry).is_err());
        registry.unregister(Box::new(squatter)).unwrap();
        // Nothing of the failed attempt is left behind, so a retry succeeds.
        let m = Metrics::register(&registry).unwrap();
        m.retry_attempt();
        assert!(scrape(&registry).contains("safesync_retry_attempts_total 1\n"));
    }

    #[test]
    fn recording_shows_in_the_scrape() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        let ms = Duration::from_millis(1);
        m.write("t", WriteOp::Update, WriteOutcome::Conflict, ms);
        m.write("t", WriteOp::Insert, WriteOutcome::Ok, ms);
        m.lock_acquired("advisory", "acquired", ms);
        m.lock_held("advisory", ms);
        m.lock_lost("advisory");
        m.lock_fenced("advisory");
        let text = scrape(&registry);
        for line in [
            r#"safesync_db_write_total{op="update",outcome="conflict",table="t"} 1"#,
            r#"safesync_db_write_total{op="insert",outcome="ok",table="t"} 1"#,
            r#"safesync_db_write_latency_seconds_count{op="update",outcome="conflict",table="t"} 1"#,
            r#"safesync_occ_conflicts_total{table="t"} 1"#,
            r#"safesync_lock_acquire_latency_seconds_count{kind="advisory",outcome="acquired"} 1"#,
            r#"safesync_lock_held_seconds_count{kind="advisory"} 1"#,
            r#"safesync_lock_lost_total{kind="advisory"} 1"#,
            r#"safesync_lock_fenced_total{kind="advisory"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn clones_share_collectors() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.clone().retry_attempt();
        m.retry_attempt();
        assert!(scrape(&registry).contains("safesync_retry_attempts_total 2\n"));
    }
}
