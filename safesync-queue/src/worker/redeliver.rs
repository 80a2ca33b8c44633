//! Back-off between deliveries: an entry whose delivery failed here is
//! delivered again by this worker after a delay growing with its delivery
//! count ([`delay`]: exponential with equal jitter, capped), not after
//! `claim_idle`. The settle stage schedules it; the read loop of its route
//! takes it when due ([`Schedule`], apart from Redis) and claims it back
//! with `XCLAIM … <min-idle = its delay>` (Redis 5+, so 6.2 and 7.x), so
//! that an entry another consumer took meanwhile is left to it. `claim_idle` stays the
//! rule for entries of a dead consumer: if this worker dies, its scheduled
//! entries are claimed by the others after `claim_idle` as before.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value;
use safesync_core::__private::Backoff;
use safesync_core::{Error, Result};
use tokio::sync::Notify;

use crate::conn::SideConn;
use crate::entry::{self, Entry, items};

/// Most entries scheduled per route; beyond, an entry waits for
/// `claim_idle` instead.
const MAX_SCHEDULED: usize = 10_000;

/// The delay before delivery `deliveries + 1` of an entry that failed on
/// delivery `deliveries`: `first`, doubling with each delivery, at most
/// `max`; each delay drawn between half its cap and the cap (equal
/// jitter), so that entries failing together do not come back together.
pub(crate) fn delay(
    deliveries: u64,
    first: Duration,
    max: Duration,
    rng: &mut fastrand::Rng,
) -> Duration {
    let n = u32::try_from(deliveries.max(1)).unwrap_or(u32::MAX);
    Backoff::new(first, max).equal_jitter(n, rng)
}

/// The entries of one route waiting for their next delivery, by due time.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// Due time, entry id, the delay it waited.
    due: BTreeSet<(Instant, String, Duration)>,
}

impl Schedule {
    /// Schedules entry `id` at `at`, `wait` after its failure; false (not
    /// scheduled) when full.
    pub(crate) fn add(&mut self, id: String, at: Instant, wait: Duration) -> bool {
        if self.due.len() >= MAX_SCHEDULED {
            return false;
        }
        self.due.insert((at, id, wait));
        true
    }

    /// When the earliest entry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(at, _, _)| *at)
    }

    /// Takes at most `count` of the entries due at `now`, earliest first,
    /// each with the delay it waited.
    pub(crate) fn take_due(&mut self, now: Instant, count: usize) -> Vec<(String, Duration)> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.due.first() {
                Some((at, _, _)) if *at <= now => {
                    if let Some((_, id, wait)) = self.due.pop_first() {
                        out.push((id, wait));
                    }
                }
                _ => break,
            }
        }
        out
    }
}

/// The schedules of a worker's routes, shared by settle (which adds) and
/// the read loops (which take), with a wake-up for each loop.
pub(crate) struct Redeliveries {
    first: Duration,
    max: Duration,
    routes: Vec<(Mutex<Schedule>, Notify)>,
    rng: Mutex<fastrand::Rng>,
}

impl Redeliveries {
    /// For `routes` routes, with delays from `first` to `max`.
    pub(crate) fn new(routes: usize, first: Duration, max: Duration) -> Redeliveries {
        Redeliveries {
            first,
            max,
            routes: (0..routes).map(|_| Default::default()).collect(),
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }

    /// Entry `id` of route `route` failed on delivery `deliveries`:
    /// schedules its next delivery and wakes the route's read loop. The
    /// delay, or `None` when it was not scheduled (it then waits for
    /// `claim_idle`).
    pub(crate) fn schedule(&self, route: usize, id: String, deliveries: u64) -> Option<Duration> {
        let wait = {
            let mut rng = self.rng.lock().ok()?;
            delay(deliveries, self.first, self.max, &mut rng)
        };
        let (schedule, wake) = self.routes.get(route)?;
        let added = schedule.lock().ok()?.add(id, Instant::now() + wait, wait);
        if added {
            wake.notify_one();
        }
        added.then_some(wait)
    }

    /// Takes at most `count` entries of `route` due at `now`.
    pub(crate) fn take_due(
        &self,
        route: usize,
        now: Instant,
        count: usize,
    ) -> Vec<(String, Duration)> {
        self.routes
            .get(route)
            .and_then(|(s, _)| s.lock().ok())
            .map(|mut s| s.take_due(now, count))
            .unwrap_or_default()
    }

    /// When the next entry of `route` is due.
    pub(crate) fn next_due(&self, route: usize) -> Option<Instant> {
        self.routes
            .get(route)
            .and_then(|(s, _)| s.lock().ok())
            .and_then(|s| s.next_due())
    }

    /// Notified when an entry of `route` is scheduled.
    pub(crate) fn wake(&self, route: usize) -> Option<&Notify> {
        self.routes.get(route).map(|(_, w)| w)
    }
}

/// `XCLAIM key group consumer min-idle id…`: the entries still pending,
/// idle at least `min_idle`, now delivered to `consumer` (their delivery
/// count raised). Entries deleted meanwhile are left out (`nil` on Redis
/// 6.2; 7 drops them itself); `claim_idle` deals with them.
pub(crate) async fn claim(
    side: &SideConn,
    key: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    ids: &[String],
) -> Result<Vec<Entry>> {
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(key)
        .arg(group)
        .arg(consumer)
        .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX));
    for id in ids {
        cmd.arg(id);
    }
    let op = format!("XCLAIM on `{key}`");
    let reply: Value = side.query(&cmd, &op).await?;
    let live = items(reply)
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !matches!(v, Value::Nil))
        .collect();
    entry::entries(Value::Array(live)).map_err(|reason| Error::Decode {
        what: format!("the reply to {op}"),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Schedule, delay};

    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    #[test]
    fn delays_double_with_each_delivery_within_jitter_and_stop_at_the_cap() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            for (deliveries, cap) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1600),
                (6, 2000),
                (60, 2000),
            ] {
                let d = delay(deliveries, FIRST, MAX, &mut rng);
                let cap = Duration::from_millis(cap);
                assert!(
                    d >= cap / 2 && d <= cap,
                    "delivery {deliveries}: {d:?} not in [{:?}, {cap:?}]",
                    cap / 2
                );
            }
        }
        // Delivery 0 (unknown) is treated as the first.
        assert!(delay(0, FIRST, MAX, &mut rng) <= FIRST);
        assert!(delay(u64::MAX, FIRST, MAX, &mut rng) <= MAX);
    }

    #[test]
    fn an_entry_is_due_at_its_time_earliest_first() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.next_due(), None);
        let ms = Duration::from_millis;
        assert!(s.add("2-0".into(), t0 + ms(300), ms(300)));
        assert!(s.add("1-0".into(), t0 + ms(100), ms(100)));
        assert!(s.add("3-0".into(), t0 + ms(200), ms(200)));
        assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(100)));
        assert!(s.take_due(t0, 10).is_empty(), "nothing due yet");
        assert_eq!(
            s.take_due(t0 + ms(250), 10),
            [("1-0".to_owned(), ms(100)), ("3-0".to_owned(), ms(200))]
        );
        assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(300)));
        assert!(s.take_due(t0 + ms(1000), 0).is_empty());
        assert_eq!(s.take_due(t0 + ms(1000), 1), [("2-0".to_owned(), ms(300))]);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_full_schedule_refuses_more() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        for i in 0..super::MAX_SCHEDULED {
            assert!(s.add(format!("{i}-0"), t0, Duration::ZERO));
        }
        assert!(!s.add("x-0".into(), t0, Duration::ZERO));
    }
}
