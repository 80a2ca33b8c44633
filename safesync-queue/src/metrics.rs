//! Prometheus metrics of the queue: what a [`Worker`](crate::Worker)
//! counts and times.
//!
//! Recording never fails and never panics: a metric that cannot be recorded
//! is skipped. Only [`QueueMetrics::register`] reports errors.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};
use safesync_core::{Error, Result};

use crate::health::Health;

/// Buckets of the handler latency, in seconds: 1 ms to 60 s.
const HANDLER_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The queue's Prometheus collectors, shared by every clone.
///
/// A [`Worker`](crate::Worker) records into [`QueueMetrics::global`] unless
/// given another instance with [`Worker::metrics`](crate::Worker::metrics).
/// Names and labels are a stable contract; every series has the labels
/// `stream` and `group`:
///
/// | name | type | more labels | counts |
/// | --- | --- | --- | --- |
/// | `safesync_queue_messages_read_total` | counter | | entries delivered to the worker (new, re-read or claimed) |
/// | `safesync_queue_ack_total` | counter | | entries acknowledged |
/// | `safesync_queue_already_acked_total` | counter | | `XACK`s answered 0: someone else had acknowledged the entry |
/// | `safesync_queue_claimed_total` | counter | | entries claimed from idle consumers (`XAUTOCLAIM`) |
/// | `safesync_queue_trimmed_total` | counter | | pending entries found deleted or trimmed away, then acknowledged |
/// | `safesync_queue_dead_lettered_total` | counter | | entries moved to the group's dead letters (`{<stream>}:dead:<group>`) |
/// | `safesync_queue_handler_latency_seconds` | histogram | `outcome` | handler runs: `ok`, `error`, `panic`, `duplicate` (the ledger had it), `timeout` (cut off by the handler timeout) |
/// | `safesync_queue_length` | gauge | | from [`QueueMetrics::record_health`] |
/// | `safesync_queue_pending` | gauge | | from [`QueueMetrics::record_health`] |
/// | `safesync_queue_lag` | gauge | | from [`QueueMetrics::record_health`], when known |
/// | `safesync_queue_oldest_pending_idle_seconds` | gauge | | from [`QueueMetrics::record_health`] |
/// | `safesync_queue_dead_letters` | gauge | | the group's dead letters, from [`QueueMetrics::record_health`] |
///
/// ```
/// use safesync_queue::QueueMetrics;
///
/// let registry = prometheus::Registry::new();
/// let metrics = QueueMetrics::register(&registry)?;
/// // Worker::new(db, redis).metrics(metrics) …
/// # let _ = metrics;
/// # Ok::<_, safesync_core::Error>(())
/// ```
#[derive(Clone)]
pub struct QueueMetrics {
    inner: Arc<Collectors>,
}

impl fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueMetrics").finish_non_exhaustive()
    }
}

struct Collectors {
    read: IntCounterVec,
    acked: IntCounterVec,
    already_acked: IntCounterVec,
    claimed: IntCounterVec,
    trimmed: IntCounterVec,
    dead_lettered: IntCounterVec,
    handler: HistogramVec,
    length: IntGaugeVec,
    pending: IntGaugeVec,
    lag: IntGaugeVec,
    oldest_idle: GaugeVec,
    dead_letters: IntGaugeVec,
}

/// How a handler run ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Panic,
    Duplicate,
    /// Cut off by the handler timeout.
    Timeout,
}

impl Outcome {
    const ALL: usize = 5;

    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
            Outcome::Duplicate => "duplicate",
            Outcome::Timeout => "timeout",
        }
    }
}

/// A counter of [`QueueMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Read,
    Acked,
    AlreadyAcked,
    Claimed,
    Trimmed,
    DeadLettered,
}

impl Count {
    const ALL: usize = 6;

    fn index(self) -> usize {
        self as usize
    }
}

const LABELS: &[&str] = &["stream", "group"];

impl Collectors {
    fn new() -> prometheus::Result<Collectors> {
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), LABELS);
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), LABELS);
        Ok(Collectors {
            read: counter(
                "safesync_queue_messages_read_total",
                "Stream entries delivered to the worker (new, re-read or claimed).",
            )?,
            acked: counter("safesync_queue_ack_total", "Stream entries acknowledged.")?,
            already_acked: counter(
                "safesync_queue_already_acked_total",
                "XACKs answered 0: the entry had been acknowledged by someone else.",
            )?,
            claimed: counter(
                "safesync_queue_claimed_total",
                "Stream entries claimed from idle consumers.",
            )?,
            trimmed: counter(
                "safesync_queue_trimmed_total",
                "Pending stream entries found deleted or trimmed away, then acknowledged.",
            )?,
            dead_lettered: counter(
                "safesync_queue_dead_lettered_total",
                "Stream entries moved to the group's dead letters.",
            )?,
            handler: HistogramVec::new(
                HistogramOpts::new(
                    "safesync_queue_handler_latency_seconds",
                    "Handler runs in seconds, transaction and commit included, by outcome.",
                )
                .buckets(HANDLER_BUCKETS.to_vec()),
                &["stream", "group", "outcome"],
            )?,
            length: gauge("safesync_queue_length", "Entries in the stream.")?,
            pending: gauge(
                "safesync_queue_pending",
                "Entries delivered to the group and not yet acknowledged.",
            )?,
            lag: gauge(
                "safesync_queue_lag",
                "Entries of the stream not yet delivered to the group.",
            )?,
            oldest_idle: GaugeVec::new(
                Opts::new(
                    "safesync_queue_oldest_pending_idle_seconds",
                    "Idle time of the oldest pending entry, in seconds.",
                ),
                LABELS,
            )?,
            dead_letters: gauge(
                "safesync_queue_dead_letters",
                "Entries in the group's dead letters.",
            )?,
        })
    }

    fn boxed(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.read.clone()),
            Box::new(self.acked.clone()),
            Box::new(self.already_acked.clone()),
            Box::new(self.claimed.clone()),
            Box::new(self.trimmed.clone()),
            Box::new(self.dead_lettered.clone()),
            Box::new(self.handler.clone()),
            Box::new(self.length.clone()),
            Box::new(self.pending.clone()),
            Box::new(self.lag.clone()),
            Box::new(self.oldest_idle.clone()),
            Box::new(self.dead_letters.clone()),
        ]
    }
}

fn register_err(e: &prometheus::Error) -> Error {
    Error::Config(format!("cannot register safesync queue metrics: {e}"))
}

impl QueueMetrics {
    /// Creates the collectors and registers them on `registry`.
    ///
    /// All or nothing: when one collector cannot be registered (most often
    /// because the registry already has one of that name), those registered
    /// so far are unregistered again and the answer is
    /// [`Error::Config`] naming the clash.
    ///
    /// ```
    /// use safesync_queue::QueueMetrics;
    ///
    /// let registry = prometheus::Registry::new();
    /// let metrics = QueueMetrics::register(&registry)?;
    /// assert!(QueueMetrics::register(&registry).is_err(), "names are taken");
    /// # let _ = metrics;
    /// # Ok::<_, safesync_core::Error>(())
    /// ```
    pub fn register(registry: &Registry) -> Result<QueueMetrics> {
        let collectors = Collectors::new().map_err(|e| register_err(&e))?;
        for (i, collector) in collectors.boxed().into_iter().enumerate() {
            if let Err(e) = registry.register(collector) {
                for done in collectors.boxed().into_iter().take(i) {
                    let _ = registry.unregister(done);
                }
                return Err(register_err(&e));
            }
        }
        Ok(QueueMetrics {
            inner: Arc::new(collectors),
        })
    }

    /// The process-wide instance, registered once on
    /// [`prometheus::default_registry`] on first use. Should that registry
    /// refuse it, the instance still counts but is not exported, and a
    /// warning is logged once.
    ///
    /// ```
    /// let metrics = safesync_queue::QueueMetrics::global();
    /// # let _ = metrics;
    /// ```
    pub fn global() -> QueueMetrics {
        static GLOBAL: OnceLock<QueueMetrics> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                QueueMetrics::register(prometheus::default_registry()).unwrap_or_else(|e| {
                    tracing::warn!(
                        error = %e,
                        "safesync queue metrics are not exported: the default Prometheus registry refused them"
                    );
                    QueueMetrics::unregistered()
                })
            })
            .clone()
    }

    /// Collectors on no registry.
    fn unregistered() -> QueueMetrics {
        let collectors = Collectors::new()
            .expect("safesync's queue metric names, labels and buckets are valid constants");
        QueueMetrics {
            inner: Arc::new(collectors),
        }
    }

    /// Sets the gauges of `stream` and `group` from a [`Health`] snapshot
    /// (the lag gauge only when the lag is known).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// use safesync_queue::QueueMetrics;
    ///
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let health = safesync_queue::health(&redis, "orders", "billing").await?;
    /// QueueMetrics::global().record_health("orders", "billing", &health);
    /// # Ok(()) }
    /// ```
    pub fn record_health(&self, stream: &str, group: &str, health: &Health) {
        let labels = [stream, group];
        let set = |g: &IntGaugeVec, v: u64| {
            if let Ok(g) = g.get_metric_with_label_values(&labels) {
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        };
        set(&self.inner.length, health.length);
        set(&self.inner.pending, health.pending);
        set(&self.inner.dead_letters, health.dead_letters);
        if let Some(lag) = health.lag {
            set(&self.inner.lag, lag);
        }
        if let Ok(g) = self.inner.oldest_idle.get_metric_with_label_values(&labels) {
            g.set(health.oldest_pending_idle.map_or(0.0, |d| d.as_secs_f64()));
        }
    }

    /// The series of one stream and group, looked up once and then kept:
    /// recording per message is then an atomic add, not a label lookup.
    pub(crate) fn labelled(&self, stream: &str, group: &str) -> Labelled {
        Labelled {
            metrics: self.clone(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            counts: Default::default(),
            latency: Default::default(),
        }
    }

    fn counter(&self, count: Count, stream: &str, group: &str) -> Option<IntCounter> {
        let vec = match count {
            Count::Read => &self.inner.read,
            Count::Acked => &self.inner.acked,
            Count::AlreadyAcked => &self.inner.already_acked,
            Count::Claimed => &self.inner.claimed,
            Count::Trimmed => &self.inner.trimmed,
            Count::DeadLettered => &self.inner.dead_lettered,
        };
        vec.get_metric_with_label_values(&[stream, group]).ok()
    }

    fn histogram(&self, outcome: Outcome, stream: &str, group: &str) -> Option<Histogram> {
        self.inner
            .handler
            .get_metric_with_label_values(&[stream, group, outcome.as_str()])
            .ok()
    }
}

/// The series of one handler's stream and group, each looked up on first
/// use (so a series appears in the scrape when first recorded, as before)
/// and kept.
pub(crate) struct Labelled {
    metrics: QueueMetrics,
    stream: String,
    group: String,
    counts: [OnceLock<Option<IntCounter>>; Count::ALL],
    latency: [OnceLock<Option<Histogram>>; Outcome::ALL],
}

impl Labelled {
    /// Adds `n` to a counter.
    pub(crate) fn add(&self, count: Count, n: u64) {
        if n == 0 {
            return;
        }
        let c = self.counts[count.index()]
            .get_or_init(|| self.metrics.counter(count, &self.stream, &self.group));
        if let Some(c) = c {
            c.inc_by(n);
        }
    }

    /// Times one handler run.
    pub(crate) fn handled(&self, outcome: Outcome, latency: Duration) {
        let h = self.latency[outcome.index()]
            .get_or_init(|| self.metrics.histogram(outcome, &self.stream, &self.group));
        if let Some(h) = h {
            h.observe(latency.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::Registry;

    use super::{Count, Outcome, QueueMetrics};

    #[test]
    fn recording_shows_in_the_scrape() {
        let registry = Registry::new();
        let m = QueueMetrics::register(&registry).unwrap();
        let l = m.labelled("s", "g");
        l.add(Count::Read, 2);
        l.add(Count::Read, 1);
        l.add(Count::AlreadyAcked, 1);
        l.handled(Outcome::Panic, Duration::from_millis(2));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for line in [
            r#"safesync_queue_messages_read_total{group="g",stream="s"} 3"#,
            r#"safesync_queue_already_acked_total{group="g",stream="s"} 1"#,
            r#"safesync_queue_handler_latency_seconds_count{group="g",outcome="panic",stream="s"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn registering_twice_is_an_error_and_the_global_instance_works() {
        let registry = Registry::new();
        let _m = QueueMetrics::register(&registry).unwrap();
        assert!(QueueMetrics::register(&registry).is_err());
        QueueMetrics::global()
            .labelled("s", "g")
            .add(Count::Acked, 1);
        let _ = QueueMetrics::unregistered();
    }
}
