//! The worker's settings and their allowed ranges, checked at `run` so
//! that no setting can panic a task later.

use std::time::Duration;

use safesync_core::{Error, Result, RetryPolicy};

/// Most handlers running at once (the semaphore's own limit is far above).
pub(crate) const MAX_CONCURRENCY: usize = 100_000;
/// Most entries one read asks for.
pub(crate) const MAX_BATCH: usize = 100_000;
/// Most entries sharing one transaction.
pub(crate) const MAX_PER_TRANSACTION: usize = 10_000;
/// Most entries one read may ask for: `batch × messages_per_transaction`.
pub(crate) const MAX_READ: usize = 1_000_000;
/// Longest blocking read.
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(3600);
/// Longest of the other durations (claim idle, drain, housekeeping, idle
/// consumers).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The handler timeout when none is set: this, or three quarters of
/// `claim_idle` when that is shorter.
pub(crate) const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// The first and longest delay between the deliveries of a failed entry
/// when none is set: these, or a quarter and half of `claim_idle` when
/// shorter.
pub(crate) const DEFAULT_REDELIVERY: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(30));

/// The worker's settings, as set; [`Config::check`] says whether they are
/// usable.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) consumer: String,
    pub(crate) concurrency: usize,
    pub(crate) batch: usize,
    /// `Worker::read_ahead`, when set; see [`Config::read_ahead`].
    pub(crate) read_ahead: Option<usize>,
    pub(crate) per_transaction: usize,
    pub(crate) block: Duration,
    pub(crate) claim_idle: Duration,
    pub(crate) max_deliveries: u64,
    pub(crate) drain_timeout: Duration,
    pub(crate) ledger: bool,
    pub(crate) housekeeping_every: Duration,
    pub(crate) remove_idle_consumers: Option<Duration>,
    /// How handlers' retryable errors are retried within a delivery.
    pub(crate) retry: RetryPolicy,
    /// `Worker::handler_timeout`, when set; see [`Config::handler_timeout`].
    pub(crate) handler_timeout: Option<Duration>,
    /// `Worker::redelivery_backoff`, when set; see [`Config::redelivery`].
    pub(crate) redelivery: Option<(Duration, Duration)>,
}

/// `Err` naming `setting` and its range unless `min <= value <= max`.
fn in_range<T: PartialOrd + std::fmt::Debug + Copy>(
    setting: &str,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value >= min && value <= max {
        return Ok(());
    }
    Err(Error::Config(format!(
        "`Worker::{setting}` is {value:?}; allowed: {min:?} to {max:?}"
    )))
}

impl Config {
    /// The defaults `Worker::new` starts from, for consumer `consumer`.
    pub(crate) fn defaults(consumer: String) -> Config {
        Config {
            consumer,
            concurrency: 1,
            batch: 16,
            read_ahead: None,
            per_transaction: 1,
            block: Duration::from_secs(5),
            claim_idle: Duration::from_secs(60),
            max_deliveries: 5,
            drain_timeout: Duration::from_secs(30),
            ledger: true,
            housekeeping_every: Duration::from_secs(15),
            remove_idle_consumers: None,
            retry: RetryPolicy::default(),
            handler_timeout: None,
            redelivery: None,
        }
    }

    /// The timeout of a delivery whose handler sets none: the one set, or
    /// [`DEFAULT_HANDLER_TIMEOUT`] capped at three quarters of
    /// `claim_idle`: the rest is the margin for the rollback and the claim
    /// check, so that the entry is not claimed while it still runs.
    pub(crate) fn handler_timeout(&self) -> Duration {
        self.handler_timeout
            .unwrap_or_else(|| DEFAULT_HANDLER_TIMEOUT.min(self.claim_idle / 4 * 3))
    }

    /// Entries a read asks for beyond the free slots: the number set, or
    /// by default as many as there are slots (at most `batch`) when an
    /// entry read ahead — which waits at most one handler run (at most
    /// `longest_timeout`, the longest handler timeout) for a slot, then
    /// runs at most as long — still ends within `claim_idle`
    /// (`2 × longest_timeout ≤ claim_idle`), and none otherwise.
    pub(crate) fn read_ahead(&self, longest_timeout: Duration) -> usize {
        self.read_ahead.unwrap_or_else(|| {
            if longest_timeout.saturating_mul(2) <= self.claim_idle {
                self.concurrency.min(self.batch)
            } else {
                0
            }
        })
    }

    /// The first and longest delay before a failed entry is delivered
    /// again: the ones set, or [`DEFAULT_REDELIVERY`] capped at a quarter
    /// and half of `claim_idle`.
    pub(crate) fn redelivery(&self) -> (Duration, Duration) {
        self.redelivery.unwrap_or_else(|| {
            let (first, max) = DEFAULT_REDELIVERY;
            (first.min(self.claim_idle / 4), max.min(self.claim_idle / 2))
        })
    }

    /// A handler timeout (`setting`, as the user wrote it) of at least 1 ms
    /// and below `claim_idle`: a delivery must end before its entry can be
    /// claimed by another consumer while it still runs.
    pub(crate) fn check_timeout(&self, setting: &str, timeout: Duration) -> Result<()> {
        let ms = Duration::from_millis(1);
        if timeout >= ms && timeout < self.claim_idle {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{setting} is {timeout:?}; allowed: {ms:?} to below `Worker::claim_idle` ({:?}), \
             so that a delivery ends before its entry can be claimed again",
            self.claim_idle
        )))
    }

    /// Every setting within its range; the first one out of it is an
    /// [`Error::Config`] naming it and the range.
    pub(crate) fn check(&self) -> Result<()> {
        if self.consumer.is_empty() {
            return Err(Error::Config(
                "`Worker::consumer_name` must not be empty".to_owned(),
            ));
        }
        in_range("concurrency", self.concurrency, 1, MAX_CONCURRENCY)?;
        in_range("batch", self.batch, 1, MAX_BATCH)?;
        if let Some(n) = self.read_ahead {
            in_range("read_ahead", n, 0, MAX_BATCH)?;
        }
        in_range(
            "messages_per_transaction",
            self.per_transaction,
            1,
            MAX_PER_TRANSACTION,
        )?;
        let read = self.batch.checked_mul(self.per_transaction);
        if read.is_none_or(|n| n > MAX_READ) {
            return Err(Error::Config(format!(
                "`Worker::batch` × `Worker::messages_per_transaction` is {} × {}; allowed: at most {MAX_READ}",
                self.batch, self.per_transaction
            )));
        }
        let ms = Duration::from_millis(1);
        in_range("block", self.block, ms, MAX_BLOCK)?;
        in_range("claim_idle", self.claim_idle, ms, MAX_DURATION)?;
        in_range(
            "max_deliveries",
            self.max_deliveries,
            1,
            u64::from(u32::MAX),
        )?;
        in_range(
            "drain_timeout",
            self.drain_timeout,
            Duration::ZERO,
            MAX_DURATION,
        )?;
        in_range(
            "housekeeping_every",
            self.housekeeping_every,
            Duration::from_millis(10),
            MAX_DURATION,
        )?;
        if let Some(idle) = self.remove_idle_consumers {
            in_range("remove_idle_consumers_after", idle, ms, MAX_DURATION)?;
        }
        if let Some(timeout) = self.handler_timeout {
            self.check_timeout("`Worker::handler_timeout`", timeout)?;
        }
        if let Some((first, max)) = self.redelivery
            && !(first >= ms && first <= max && max <= self.claim_idle)
        {
            return Err(Error::Config(format!(
                "`Worker::redelivery_backoff` is ({first:?}, {max:?}); allowed: first at least {ms:?}, \
                 at most max, and max at most `Worker::claim_idle` ({:?}), after which any \
                 consumer claims the entry",
                self.claim_idle
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::defaults("c".into())
    }

    /// A change of one setting.
    type Change = Box<dyn FnOnce(&mut Config)>;

    fn error(change: impl FnOnce(&mut Config)) -> String {
        let mut c = config();
        change(&mut c);
        c.check().expect_err("out of range").to_string()
    }

    #[test]
    fn the_defaults_are_valid() {
        config().check().unwrap();
    }

    #[test]
    fn each_setting_out_of_range_is_named_with_its_range() {
        let cases: [(&str, Change); 12] = [
            (
                "`Worker::block` is 18446744073709551615.999999999s; allowed: 1ms to 3600s",
                Box::new(|c| c.block = Duration::MAX),
            ),
            (
                "`Worker::block` is 0ns",
                Box::new(|c| c.block = Duration::ZERO),
            ),
            (
                "`Worker::concurrency` is 18446744073709551615; allowed: 1 to 100000",
                Box::new(|c| c.concurrency = usize::MAX),
            ),
            (
                "`Worker::concurrency` is 0",
                Box::new(|c| c.concurrency = 0),
            ),
            ("`Worker::batch` is 0", Box::new(|c| c.batch = 0)),
            (
                "`Worker::read_ahead` is 18446744073709551615",
                Box::new(|c| c.read_ahead = Some(usize::MAX)),
            ),
            (
                "`Worker::messages_per_transaction` is 0",
                Box::new(|c| c.per_transaction = 0),
            ),
            (
                "`Worker::batch` × `Worker::messages_per_transaction` is 100000 × 10000; allowed: at most 1000000",
                Box::new(|c| {
                    c.batch = MAX_BATCH;
                    c.per_transaction = MAX_PER_TRANSACTION;
                }),
            ),
            (
                "`Worker::claim_idle` is 18446744073709551615.999999999s",
                Box::new(|c| c.claim_idle = Duration::MAX),
            ),
            (
                "`Worker::max_deliveries` is 0",
                Box::new(|c| c.max_deliveries = 0),
            ),
            (
                "`Worker::drain_timeout` is 18446744073709551615.999999999s",
                Box::new(|c| c.drain_timeout = Duration::MAX),
            ),
            (
                "`Worker::remove_idle_consumers_after` is 18446744073709551615.999999999s",
                Box::new(|c| c.remove_idle_consumers = Some(Duration::MAX)),
            ),
        ];
        for (expected, change) in cases {
            let err = error(change);
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        assert!(error(|c| c.housekeeping_every = Duration::ZERO).contains("housekeeping_every"));
        assert!(error(|c| c.consumer.clear()).contains("consumer_name"));
    }

    #[test]
    fn a_handler_timeout_must_stay_below_claim_idle() {
        let err = error(|c| c.handler_timeout = Some(Duration::from_secs(60)));
        assert!(
            err.contains(
                "`Worker::handler_timeout` is 60s; allowed: 1ms to below `Worker::claim_idle` (60s)"
            ),
            "{err}"
        );
        assert!(error(|c| c.handler_timeout = Some(Duration::ZERO)).contains("handler_timeout"));
        let mut c = config();
        c.handler_timeout = Some(Duration::from_millis(59_999));
        c.check().unwrap();
    }

    #[test]
    fn a_redelivery_backoff_must_grow_and_stay_within_claim_idle() {
        let s = Duration::from_secs;
        for (first, max) in [
            (Duration::ZERO, s(1)),
            (s(2), s(1)),
            (s(1), s(61)),
            (Duration::MAX, Duration::MAX),
        ] {
            let err = error(|c| c.redelivery = Some((first, max)));
            assert!(
                err.contains(&format!(
                    "`Worker::redelivery_backoff` is ({first:?}, {max:?}); allowed: first at least 1ms, at most max, and max at most `Worker::claim_idle` (60s)"
                )),
                "{err}"
            );
        }
        let mut c = config();
        c.redelivery = Some((Duration::from_millis(1), s(60)));
        c.check().unwrap();
    }

    #[test]
    fn the_default_redelivery_backoff_is_1s_to_30s_or_within_claim_idle() {
        let mut c = config();
        assert_eq!(
            c.redelivery(),
            (Duration::from_secs(1), Duration::from_secs(30))
        );
        c.claim_idle = Duration::from_secs(2);
        assert_eq!(
            c.redelivery(),
            (Duration::from_millis(500), Duration::from_secs(1))
        );
        c.check().unwrap();
        c.redelivery = Some((Duration::from_millis(10), Duration::from_millis(20)));
        assert_eq!(
            c.redelivery(),
            (Duration::from_millis(10), Duration::from_millis(20))
        );
    }

    #[test]
    fn the_default_handler_timeout_is_30s_or_three_quarters_of_claim_idle() {
        let mut c = config();
        assert_eq!(c.handler_timeout(), Duration::from_secs(30));
        c.claim_idle = Duration::from_millis(500);
        assert_eq!(c.handler_timeout(), Duration::from_millis(375));
        c.check().unwrap();
        c.handler_timeout = Some(Duration::from_millis(100));
        assert_eq!(c.handler_timeout(), Duration::from_millis(100));
    }

    #[test]
    fn by_default_a_worker_reads_ahead_one_entry_per_slot_when_that_cannot_outlast_claim_idle() {
        let c = Config {
            concurrency: 8,
            ..Config::defaults("c".to_owned())
        };
        let timeout = c.handler_timeout();
        assert_eq!(
            (timeout, c.claim_idle),
            (Duration::from_secs(30), Duration::from_secs(60))
        );
        assert_eq!(c.read_ahead(timeout), 8, "the defaults: 2 × 30 s ≤ 60 s");
        assert_eq!(
            c.read_ahead(Duration::from_secs(31)),
            0,
            "a handler timeout above claim_idle / 2"
        );
        let small_batch = Config {
            batch: 3,
            ..c.clone()
        };
        assert_eq!(small_batch.read_ahead(timeout), 3, "at most `batch`");
        let set = Config {
            read_ahead: Some(0),
            ..c
        };
        assert_eq!(set.read_ahead(timeout), 0, "a number set is kept");
    }
}
