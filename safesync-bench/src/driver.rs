//! The measuring loop of W0–W4: worker tasks claim operation numbers from
//! a shared counter until the run's count (or time) is used up.
//!
//! Workers set themselves up (connections, files) first, then meet at a
//! barrier; the clock starts when all have arrived, so setup is never
//! timed.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::env::BoxError;

/// The operations of one run, shared by its workers.
pub(crate) struct Ops {
    next: AtomicU64,
    total: u64,
    stop: AtomicBool,
    deadline: OnceLock<Instant>,
    ready: Barrier,
    go: Barrier,
}

impl Ops {
    /// Waits until every worker is set up and the clock has started. Every
    /// worker calls it exactly once, also when its setup failed.
    pub(crate) async fn ready(&self) {
        self.ready.wait().await;
        self.go.wait().await;
    }

    /// The next operation's number, or `None` when the count or the time is
    /// used up or another worker failed.
    pub(crate) fn claim(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if self.deadline.get().is_some_and(|d| Instant::now() >= *d) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }

    /// Stops every worker at its next claim.
    pub(crate) fn abort(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one worker did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ops: u64,
    pub(crate) retries: u64,
    lat_us: Vec<u32>,
    /// Workload-specific counts (W4: inserted, duplicates).
    pub(crate) counts: [u64; 2],
}

impl Tally {
    /// Counts one finished operation that began at `started` and needed
    /// `retries` extra attempts.
    pub(crate) fn record(&mut self, started: Instant, retries: u64) {
        self.ops += 1;
        self.retries += retries;
        let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.lat_us.push(us);
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    pub(crate) ops: u64,
    pub(crate) seconds: f64,
    pub(crate) retries: u64,
    /// Per-operation latencies in microseconds, sorted; empty when not
    /// measured (W5).
    pub(crate) lat_us: Vec<u32>,
    pub(crate) counts: [u64; 2],
    /// The time limit stopped the run before its count.
    pub(crate) truncated: bool,
    /// CPU time of this process during the measured part.
    pub(crate) cpu: Option<Duration>,
}

impl Measured {
    /// The `p`-th percentile latency in milliseconds.
    pub(crate) fn percentile_ms(&self, p: usize) -> Option<f64> {
        if self.lat_us.is_empty() {
            return None;
        }
        let i = (self.lat_us.len() * p / 100).min(self.lat_us.len() - 1);
        Some(f64::from(self.lat_us[i]) / 1000.0)
    }
}

/// Runs `workers` tasks, `worker(index, ops)` each, over `total`
/// operations, stopping new ones after `limit`; the first error fails the
/// run.
pub(crate) async fn drive<F, Fut>(
    workers: usize,
    total: u64,
    limit: Option<Duration>,
    mut worker: F,
) -> Result<Measured, BoxError>
where
    F: FnMut(usize, Arc<Ops>) -> Fut,
    Fut: Future<Output = Result<Tally, BoxError>> + Send + 'static,
{
    let ops = Arc::new(Ops {
        next: AtomicU64::new(0),
        total,
        stop: AtomicBool::new(false),
        deadline: OnceLock::new(),
        ready: Barrier::new(workers + 1),
        go: Barrier::new(workers + 1),
    });
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let work = worker(w, Arc::clone(&ops));
            let ops = Arc::clone(&ops);
            tokio::spawn(async move {
                let result = work.await;
                if result.is_err() {
                    // The others stop at their next claim.
                    ops.abort();
                }
                result
            })
        })
        .collect();
    ops.ready.wait().await;
    let cpu = crate::cpu::process_cpu();
    let start = Instant::now();
    if let Some(limit) = limit {
        let _ = ops.deadline.set(start + limit);
    }
    ops.go.wait().await;
    let mut measured = Measured::default();
    let mut failure: Option<BoxError> = None;
    for h in handles {
        match h.await {
            Ok(Ok(t)) => {
                measured.ops += t.ops;
                measured.retries += t.retries;
                measured.lat_us.extend(t.lat_us);
                measured.counts[0] += t.counts[0];
                measured.counts[1] += t.counts[1];
            }
            Ok(Err(e)) => {
                ops.abort();
                failure.get_or_insert(e);
            }
            Err(e) => {
                ops.abort();
                failure.get_or_insert(format!("a worker panicked: {e}").into());
            }
        }
    }
    measured.seconds = start.elapsed().as_secs_f64();
    measured.cpu = crate::cpu::since(cpu);
    if let Some(e) = failure {
        return Err(e);
    }
    measured.lat_us.sort_unstable();
    measured.truncated = measured.ops < total;
    Ok(measured)
}

/// The framework's default back-off, written out for the raw retry loops so
/// both variants wait alike: before retry `retry` (1 = the first), a random
/// time in `[0, min(1 s, 5 ms · 2^(retry-1))]`.
pub(crate) fn backoff(retry: u32, rng: &mut fastrand::Rng) -> Duration {
    const BASE: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);
    let exp = retry.saturating_sub(1).min(30);
    let cap = BASE.saturating_mul(1u32 << exp).min(MAX);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.u64(0..=cap_nanos))
}

/// Most attempts of one W1 operation, framework and raw: hot rows at 8
/// workers need many, and a bounded loop still ends.
pub(crate) const MAX_ATTEMPTS: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::{Measured, backoff};
    use std::time::Duration;

    #[test]
    fn percentiles_pick_from_sorted_latencies() {
        let m = Measured {
            lat_us: (1..=100).map(|i| i * 1000).collect(),
            ..Measured::default()
        };
        assert_eq!(m.percentile_ms(50), Some(51.0));
        assert_eq!(m.percentile_ms(99), Some(100.0));
        assert_eq!(Measured::default().percentile_ms(50), None);
    }

    #[test]
    fn backoff_is_capped() {
        let mut rng = fastrand::Rng::with_seed(1);
        for retry in 1..40 {
            assert!(backoff(retry, &mut rng) <= Duration::from_secs(1));
        }
        assert!(backoff(1, &mut rng) <= Duration::from_millis(5));
    }
}
