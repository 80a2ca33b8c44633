//! The one exponential back-off of safesync: retries, named-lock polling
//! and the queue's reconnects.

use std::time::Duration;

/// Exponential back-off: the cap of try `n` (from 1) is
/// `min(max, base * 2^(n-1))`, drawn from with jitter or used as it is.
///
/// ```
/// use std::time::Duration;
/// use safesync_core::__private::Backoff;
///
/// let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
/// assert_eq!(b.cap(1), Duration::from_millis(10));
/// assert_eq!(b.cap(3), Duration::from_millis(40));
/// assert_eq!(b.cap(9), Duration::from_millis(50));
/// let mut rng = fastrand::Rng::with_seed(1);
/// assert!(b.full_jitter(2, &mut rng) <= Duration::from_millis(20));
/// assert!(b.equal_jitter(2, &mut rng) >= Duration::from_millis(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Starting at `base`, doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max }
    }

    /// The cap of try `n` (1 = the first): `min(max, base * 2^(n-1))`.
    pub fn cap(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }

    /// A random duration in `[0, cap(n)]` ("full jitter").
    pub fn full_jitter(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        let cap = u64::try_from(self.cap(n).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=cap))
    }

    /// A random duration in `[cap(n)/2, cap(n)]` ("equal jitter"): never
    /// close to zero, for loops that must not spin.
    pub fn equal_jitter(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        let half = self.cap(n) / 2;
        half + half.mul_f64(rng.f64())
    }
}
