//! How quick each plain handler is lately, for the dispatch stage's share
//! of entries per message task ([`task_size`](super::dispatch::task_size)).
//! The run stage records each plain run; dispatch only asks.
//!
//! A run counts at its own length only when the handler's future finished
//! in its first poll: that time is the handler's own work, whatever else
//! the runtime is doing. A handler that waited on anything (its future
//! went pending) counts as slow, [`TASK_BUDGET`], which gives it the fair
//! share of the free slots: such a handler gains from running beside
//! others, and the time it took says more about its I/O than about it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::dispatch::TASK_BUDGET;

/// Runs of one plain handler: those of a message task, or of a window.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Runs {
    /// Time of the runs that finished in their first poll, and how many.
    took: Duration,
    quick: u32,
    /// A run went pending.
    pub(crate) waited: bool,
}

impl Runs {
    /// One run took `took` and was polled `polls` times.
    pub(crate) fn add(&mut self, took: Duration, polls: u32) {
        if polls <= 1 {
            self.took = self.took.saturating_add(took);
            self.quick = self.quick.saturating_add(1);
        } else {
            self.waited = true;
        }
    }

    /// True when no run was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.quick == 0 && !self.waited
    }

    fn merge(&mut self, other: Runs) {
        self.took = self.took.saturating_add(other.took);
        self.quick = self.quick.saturating_add(other.quick);
        self.waited |= other.waited;
    }
}

/// How quick one plain handler is lately: over this window of
/// [`Pace::WINDOW`] and the one before, the mean time of the runs that
/// finished in their first poll — or slow, when one of them waited, so a
/// handler that waits keeps the fair shares for a window at least. A mean
/// rather than the slowest: the slowest of some 100,000 runs a second is
/// whenever the thread was preempted.
#[derive(Debug, Default, Clone, Copy)]
struct Pace {
    /// The window `current` belongs to, counted from the start.
    window: u64,
    current: Runs,
    previous: Runs,
}

impl Pace {
    const WINDOW: Duration = Duration::from_secs(1);

    fn window_of(elapsed: Duration) -> u64 {
        u64::try_from(elapsed.as_millis() / Self::WINDOW.as_millis()).unwrap_or(u64::MAX)
    }

    /// Moves to the window of `elapsed` (since the start).
    fn advance(&mut self, elapsed: Duration) {
        let now = Self::window_of(elapsed);
        if now == self.window.saturating_add(1) {
            self.previous = self.current;
            self.current = Runs::default();
        } else if now > self.window {
            self.previous = Runs::default();
            self.current = Runs::default();
        }
        self.window = self.window.max(now);
    }

    /// Adds `runs` to this window.
    fn record(&mut self, elapsed: Duration, runs: Runs) {
        self.advance(elapsed);
        self.current.merge(runs);
    }

    /// The time per entry lately: [`TASK_BUDGET`] when a run waited,
    /// `None` when no run was seen in this window or the one before.
    fn per_entry(&mut self, elapsed: Duration) -> Option<Duration> {
        self.advance(elapsed);
        let (c, p) = (self.current, self.previous);
        if c.waited || p.waited {
            return Some(TASK_BUDGET);
        }
        let quick = c.quick.saturating_add(p.quick);
        (quick > 0).then(|| c.took.saturating_add(p.took) / quick)
    }
}

/// Every plain handler's [`Pace`], by route index.
pub(crate) struct Pacing {
    paces: Mutex<HashMap<usize, Pace>>,
    started: Instant,
}

impl Pacing {
    pub(crate) fn new() -> Pacing {
        Pacing {
            paces: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The time per entry of `route`'s handler lately (see [`Pace`]).
    pub(crate) fn per_entry(&self, route: usize) -> Option<Duration> {
        let elapsed = self.started.elapsed();
        self.paces
            .lock()
            .ok()?
            .get_mut(&route)
            .and_then(|p| p.per_entry(elapsed))
    }

    /// Adds `runs` of `route`'s handler.
    pub(crate) fn record(&self, route: usize, runs: Runs) {
        let elapsed = self.started.elapsed();
        if let Ok(mut paces) = self.paces.lock() {
            paces.entry(route).or_default().record(elapsed, runs);
        }
    }
}

/// A future that counts its polls in `polls`.
pub(crate) struct Counted<'a, F> {
    pub(crate) inner: F,
    pub(crate) polls: &'a AtomicU32,
}

impl<F: Future + Unpin> Future for Counted<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::{Counted, Pace, Runs};
    use crate::worker::dispatch::TASK_BUDGET;

    const US: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);

    fn runs(took: Duration, quick: u32, waited: bool) -> Runs {
        Runs {
            took,
            quick,
            waited,
        }
    }

    #[test]
    fn quick_runs_give_their_mean_and_one_that_waited_keeps_shares_fair_a_window_at_least() {
        let mut pace = Pace::default();
        let at = |ms: u64| Duration::from_millis(ms);
        assert_eq!(pace.per_entry(at(0)), None, "nothing seen yet");
        pace.record(at(10), runs(64 * US, 64, false));
        assert_eq!(pace.per_entry(at(20)), Some(US));
        // One preempted run among many moves the mean, not the verdict.
        pace.record(at(30), runs(64 * US + 40 * US, 64, false));
        assert_eq!(pace.per_entry(at(40)), Some(168 * US / 128));
        pace.record(at(50), runs(10 * US, 10, true));
        assert_eq!(pace.per_entry(at(60)), Some(TASK_BUDGET), "a run waited");
        // The next window still remembers it.
        pace.record(at(1_100), runs(64 * US, 64, false));
        assert_eq!(pace.per_entry(at(1_900)), Some(TASK_BUDGET));
        // The window after: only what the last window saw.
        assert_eq!(pace.per_entry(at(2_100)), Some(US));
        // A long quiet spell: nothing recent.
        assert_eq!(pace.per_entry(at(9_000)), None);
    }

    #[test]
    fn runs_that_waited_count_apart() {
        let mut r = Runs::default();
        assert!(r.is_empty());
        r.add(3 * US, 1);
        r.add(5 * US, 1);
        assert_eq!((r.took, r.quick, r.waited), (8 * US, 2, false));
        r.add(MS, 2);
        assert_eq!((r.took, r.quick, r.waited), (8 * US, 2, true));
        assert!(!r.is_empty());
    }

    #[tokio::test]
    async fn polls_are_counted() {
        let polls = AtomicU32::new(0);
        Counted {
            inner: Box::pin(async {}),
            polls: &polls,
        }
        .await;
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        let polls = AtomicU32::new(0);
        Counted {
            inner: Box::pin(tokio::task::yield_now()),
            polls: &polls,
        }
        .await;
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
