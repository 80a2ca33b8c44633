//! The one reporting path: every count of a run goes through a
//! [`Reporter`], which adds it to the run's [`Summary`] and to the
//! Prometheus series of its stream and group at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::failure::FailedDelivery;
use crate::metrics::{Count, Labelled, Outcome};
use crate::relay::RelaySummary;

/// What a [`Worker::run`](crate::Worker::run) did, counted over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Entries delivered to this worker: new, re-read after a reconnect,
    /// or claimed (those claimed only to be dead-lettered included;
    /// entries found deleted are counted in `trimmed` instead).
    pub read: u64,
    /// Handler runs whose transaction committed, or, for a
    /// [`PlainHandler`](crate::PlainHandler), that returned `Ok`.
    pub processed: u64,
    /// Transactions committed for handlers: one per entry, or one per
    /// group with
    /// [`messages_per_transaction`](crate::Worker::messages_per_transaction).
    pub transactions: u64,
    /// Entries the ledger showed as already processed (an earlier
    /// delivery committed, its acknowledgement was lost): acknowledged
    /// without running the handler.
    pub duplicates: u64,
    /// `XACK`s that acknowledged an entry (after a commit, a dead letter or
    /// a trim).
    pub acked: u64,
    /// `XACK`s answered 0: someone else had acknowledged the entry.
    pub already_acked: u64,
    /// Deliveries that failed (an error the retry policy did not retry or
    /// gave up on, a panic, a timeout, or a failed begin, ledger write or
    /// commit): rolled back (if in a transaction), not acknowledged. A
    /// handler's [`Error::reject`](safesync_core::Error::reject) counts
    /// here too, and its entry in `dead_lettered`.
    pub failed: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries claimed from idle consumers: after `claim_idle`, or by this
    /// worker from itself when a failed entry's back-off is over (see
    /// [`Worker::redelivery_backoff`](crate::Worker::redelivery_backoff)).
    pub claimed: u64,
    /// Pending entries found deleted or trimmed away, then acknowledged.
    pub trimmed: u64,
    /// Handlers still running at the drain deadline: cancelled, rolled
    /// back, left pending.
    pub abandoned: u64,
    /// Attempts beyond the first within one delivery: retryable errors
    /// retried in place, each in a new transaction (see
    /// [`Worker::retry`](crate::Worker::retry)).
    pub retried: u64,
    /// Deliveries cut off by the handler timeout (also counted in
    /// `failed`; see [`Worker::handler_timeout`](crate::Worker::handler_timeout)).
    pub timed_out: u64,
    /// The last failed delivery of each stream and group that had one in
    /// this run (those counted in `failed`), ordered by stream and group.
    pub last_errors: Vec<FailedDelivery>,
    /// What the worker's outbox relay sent (all zero without one; see
    /// [`Worker::relay_outbox`](crate::Worker::relay_outbox)).
    pub outbox: RelaySummary,
}

/// Something counted: one field of [`Summary`], and for some the
/// Prometheus counter of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Read,
    Processed,
    Transaction,
    Duplicate,
    Acked,
    AlreadyAcked,
    Failed,
    DeadLettered,
    Claimed,
    Trimmed,
    Abandoned,
    Retried,
    TimedOut,
}

impl Event {
    const ALL: usize = 13;

    /// The Prometheus counter it also goes to; the others show in the
    /// handler histogram's `outcome` label instead.
    fn metric(self) -> Option<Count> {
        match self {
            Event::Read => Some(Count::Read),
            Event::Acked => Some(Count::Acked),
            Event::AlreadyAcked => Some(Count::AlreadyAcked),
            Event::Claimed => Some(Count::Claimed),
            Event::Trimmed => Some(Count::Trimmed),
            Event::DeadLettered => Some(Count::DeadLettered),
            Event::Processed
            | Event::Transaction
            | Event::Duplicate
            | Event::Failed
            | Event::Abandoned
            | Event::Retried
            | Event::TimedOut => None,
        }
    }
}

/// The run's counts behind [`Summary`], one per [`Event`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    counts: [AtomicU64; Event::ALL],
    /// The last failed delivery of each stream and group.
    last_errors: Mutex<BTreeMap<(String, String), FailedDelivery>>,
}

impl Stats {
    /// What was counted so far.
    pub(crate) fn summary(&self) -> Summary {
        let get = |e: Event| self.counts[e as usize].load(Ordering::Relaxed);
        Summary {
            read: get(Event::Read),
            processed: get(Event::Processed),
            transactions: get(Event::Transaction),
            duplicates: get(Event::Duplicate),
            acked: get(Event::Acked),
            already_acked: get(Event::AlreadyAcked),
            failed: get(Event::Failed),
            dead_lettered: get(Event::DeadLettered),
            claimed: get(Event::Claimed),
            trimmed: get(Event::Trimmed),
            abandoned: get(Event::Abandoned),
            retried: get(Event::Retried),
            timed_out: get(Event::TimedOut),
            last_errors: self
                .last_errors
                .lock()
                .map(|e| e.values().cloned().collect())
                .unwrap_or_default(),
            outbox: RelaySummary::default(),
        }
    }
}

/// The reporting handle of one stream and group: the run's [`Stats`] and
/// that pair's metric series.
pub(crate) struct Reporter {
    stats: Arc<Stats>,
    labels: Labelled,
}

impl Reporter {
    pub(crate) fn new(stats: Arc<Stats>, labels: Labelled) -> Reporter {
        Reporter { stats, labels }
    }

    /// Counts `n` of `event` in the summary and, where it has one, in its
    /// Prometheus counter.
    pub(crate) fn add(&self, event: Event, n: u64) {
        if n == 0 {
            return;
        }
        self.stats.counts[event as usize].fetch_add(n, Ordering::Relaxed);
        if let Some(count) = event.metric() {
            self.labels.add(count, n);
        }
    }

    /// Keeps `f` as the last error of its stream and group.
    pub(crate) fn last_error(&self, f: &FailedDelivery) {
        if let Ok(mut errors) = self.stats.last_errors.lock() {
            errors.insert((f.stream.clone(), f.group.clone()), f.clone());
        }
    }

    /// Times one handler run in the histogram, under `outcome`.
    pub(crate) fn handled(&self, outcome: Outcome, latency: Duration) {
        self.labels.handled(outcome, latency);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus::Registry;

    use super::{Event, Reporter, Stats};
    use crate::QueueMetrics;

    fn scraped(registry: &Registry, name: &str) -> Option<u64> {
        let family = registry.gather().into_iter().find(|f| f.name() == name)?;
        let metric = family.get_metric().first()?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        // reason: small test counts
        Some(metric.get_counter().get_value() as u64)
    }

    #[test]
    fn one_report_reaches_the_summary_and_the_scrape() {
        let registry = Registry::new();
        let metrics = QueueMetrics::register(&registry).expect("register");
        let stats = Arc::new(Stats::default());
        let report = Reporter::new(Arc::clone(&stats), metrics.labelled("s", "g"));
        report.add(Event::Read, 3);
        report.add(Event::Acked, 2);
        report.add(Event::DeadLettered, 1);
        report.add(Event::Processed, 2);
        report.add(Event::Failed, 0);
        let s = stats.summary();
        assert_eq!(
            (s.read, s.acked, s.dead_lettered, s.processed, s.failed),
            (3, 2, 1, 2, 0)
        );
        assert_eq!(
            scraped(&registry, "safesync_queue_messages_read_total"),
            Some(3)
        );
        assert_eq!(scraped(&registry, "safesync_queue_ack_total"), Some(2));
        assert_eq!(
            scraped(&registry, "safesync_queue_dead_lettered_total"),
            Some(1)
        );
    }

    #[test]
    fn every_event_has_its_own_summary_field() {
        let stats = Arc::new(Stats::default());
        let report = Reporter::new(
            Arc::clone(&stats),
            QueueMetrics::global().labelled("s", "g"),
        );
        let all = [
            Event::Read,
            Event::Processed,
            Event::Transaction,
            Event::Duplicate,
            Event::Acked,
            Event::AlreadyAcked,
            Event::Failed,
            Event::DeadLettered,
            Event::Claimed,
            Event::Trimmed,
            Event::Abandoned,
            Event::Retried,
            Event::TimedOut,
        ];
        for (n, e) in (1..).zip(all) {
            report.add(e, n);
        }
        let s = stats.summary();
        let fields = [
            s.read,
            s.processed,
            s.transactions,
            s.duplicates,
            s.acked,
            s.already_acked,
            s.failed,
            s.dead_lettered,
            s.claimed,
            s.trimmed,
            s.abandoned,
            s.retried,
            s.timed_out,
        ];
        assert_eq!(fields, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    }
}
