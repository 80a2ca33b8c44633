//! Retry policy: what to retry, how often, how long to wait.

use std::time::Duration;

/// How [`Db::retry`](crate::Db::retry) retries: bounded attempts and total
/// time, exponential back-off with full jitter.
///
/// Only errors that a fresh transaction may not hit are retried: version
/// conflicts, deadlocks and serialisation failures, SQLite busy, and — when
/// [`retry_lock_timeouts`](RetryPolicy::retry_lock_timeouts) is set — lock-wait
/// timeouts.
///
/// ```
/// use std::time::Duration;
/// use safesync_core::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(20)
///     .base_delay(Duration::from_millis(2))
///     .max_delay(Duration::from_millis(100));
/// assert_eq!(policy.attempts(), 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_elapsed: Duration,
    base_delay: Duration,
    max_delay: Duration,
    lock_timeouts: bool,
}

impl Default for RetryPolicy {
    /// 10 attempts within 30 s, back-off from 5 ms doubling to at most 1 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            max_elapsed: Duration::from_secs(30),
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1),
            lock_timeouts: false,
        }
    }
}

impl RetryPolicy {
    /// A policy that runs the work once and never retries.
    ///
    /// ```
    /// # use safesync_core::RetryPolicy;
    /// assert_eq!(RetryPolicy::never().attempts(), 1);
    /// ```
    pub fn never() -> Self {
        RetryPolicy::default().max_attempts(1)
    }

    /// At most this many attempts. `0` is taken as `1`: the work always
    /// runs once (there is no "never run" policy), and
    /// [`attempts`](RetryPolicy::attempts) then reports 1.
    ///
    /// ```
    /// # use safesync_core::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().max_attempts(0).attempts(), 1);
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// No new attempt starts once this much time has passed since the first.
    #[must_use]
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }

    /// The back-off cap of the first retry; it doubles with each further one.
    #[must_use]
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// The largest back-off cap.
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Also retry lock-wait timeouts, after rolling the whole transaction
    /// back: [`Error::LockTimeout`](crate::Error::LockTimeout) of a row or
    /// of SQLite's write lock (see
    /// [`DbOptions::lock_timeout`](crate::DbOptions::lock_timeout)), and
    /// the database's own lock-wait errors (MySQL 1205, Postgres 55P03).
    /// Off by default.
    #[must_use]
    pub fn retry_lock_timeouts(mut self, yes: bool) -> Self {
        self.lock_timeouts = yes;
        self
    }

    /// The configured maximum number of attempts.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The configured total time budget.
    pub fn elapsed_budget(&self) -> Duration {
        self.max_elapsed
    }

    /// Whether this policy retries `err`.
    ///
    /// ```
    /// # use safesync_core::{Error, RetryPolicy};
    /// assert!(!RetryPolicy::default().retries(&Error::not_found()));
    /// ```
    pub fn retries(&self, err: &crate::Error) -> bool {
        err.is_retryable() || (self.lock_timeouts && err.is_lock_wait_timeout())
    }

    /// The sleep before retry number `retry` (1 = the first retry): a random
    /// duration in `[0, min(max_delay, base_delay * 2^(retry-1))]`
    /// ("full jitter").
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use safesync_core::RetryPolicy;
    /// let p = RetryPolicy::default().base_delay(Duration::from_millis(10));
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// assert!(p.backoff(1, &mut rng) <= Duration::from_millis(10));
    /// ```
    pub fn backoff(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        crate::backoff::Backoff::new(self.base_delay, self.max_delay).full_jitter(retry, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::RetryPolicy;
    use std::time::Duration;

    #[test]
    fn backoff_caps_double_and_saturate() {
        let p = RetryPolicy::default()
            .base_delay(Duration::from_millis(4))
            .max_delay(Duration::from_millis(20));
        let mut rng = fastrand::Rng::with_seed(42);
        for retry in 1..=10u32 {
            let cap = Duration::from_millis((4u64 << (retry - 1)).min(20));
            for _ in 0..200 {
                assert!(p.backoff(retry, &mut rng) <= cap, "retry {retry}");
            }
        }
    }

    #[test]
    fn backoff_is_jittered_and_reproducible() {
        let p = RetryPolicy::default().base_delay(Duration::from_millis(100));
        let draws = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..8).map(|_| p.backoff(3, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        let d = draws(1);
        assert!(d.iter().any(|x| *x != d[0]), "full jitter varies: {d:?}");
    }

    #[test]
    fn attempts_are_at_least_one() {
        assert_eq!(RetryPolicy::default().max_attempts(0).attempts(), 1);
    }
}
