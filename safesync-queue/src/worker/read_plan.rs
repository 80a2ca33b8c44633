//! The read decision, apart from Redis: what one read loop asks for next —
//! its own pending entries again (after a (re)connect), entries due to be
//! claimed, or new entries — and how many. [`ReadState`] is the loop's own
//! state; the loop tells it what each read brought.

use std::time::{Duration, Instant};

use crate::entry::{self, Entry};

/// The settings the decision depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most entries one read asks for (`Worker::batch`).
    pub(crate) batch: usize,
    /// Entries asked for beyond the free slots.
    pub(crate) read_ahead: usize,
    /// New entries of a transactional handler per slot.
    pub(crate) per_transaction: usize,
    /// Longest wait for new entries.
    pub(crate) block: Duration,
    /// Idle time after which an entry is claimed.
    pub(crate) claim_idle: Duration,
}

/// The next read of a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// This consumer's pending entries again, after id `from`
    /// (`XREADGROUP … <from>`).
    OwnPending { from: String, count: usize },
    /// Entries of any consumer idle past `claim_idle` (`XAUTOCLAIM`).
    Claim { count: usize },
    /// New entries, waiting at most `block` (`XREADGROUP … BLOCK … >`).
    New { count: usize, block: Duration },
}

/// How often claims are looked for: half the claim idle time, between
/// 50 ms and 30 s.
pub(crate) fn claim_interval(claim_idle: Duration) -> Duration {
    (claim_idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(30))
}

/// Entries one read asks for with `free` slots: those, plus the read-ahead,
/// at most `batch`.
pub(crate) fn read_size(free: usize, limits: &Limits) -> usize {
    free.saturating_add(limits.read_ahead)
        .min(limits.batch)
        .max(1)
}

/// Where one read loop is.
#[derive(Debug)]
pub(crate) struct ReadState {
    /// Reading own pending entries again from after this id; `None` when
    /// done.
    pending_from: Option<String>,
    /// When claims are next looked for.
    next_claim: Instant,
    /// The last claim found nothing: read new entries before the next.
    new_before_claim: bool,
    /// The newest id this loop saw delivered to the group: where a group
    /// found deleted is created again from.
    last_delivered: Option<String>,
}

impl ReadState {
    /// A loop starting at `now`: its own pending entries first, then a
    /// claim.
    pub(crate) fn new(now: Instant) -> ReadState {
        ReadState {
            pending_from: Some("0".to_owned()),
            next_claim: now,
            new_before_claim: false,
            last_delivered: None,
        }
    }

    /// What to read next at `now`, with `free` handler slots, for a plain
    /// handler (one entry per slot) or a transactional one (a transaction
    /// of `per_transaction` entries per slot).
    pub(crate) fn next(&self, now: Instant, free: usize, plain: bool, limits: &Limits) -> Next {
        let count = read_size(free, limits);
        if let Some(from) = &self.pending_from {
            return Next::OwnPending {
                from: from.clone(),
                count,
            };
        }
        if now >= self.next_claim && !self.new_before_claim {
            return Next::Claim { count };
        }
        let per_slot = if plain { 1 } else { limits.per_transaction };
        let until_claim = self.next_claim.saturating_duration_since(now);
        Next::New {
            count: count.saturating_mul(per_slot),
            block: limits.block.min(until_claim).max(Duration::from_millis(1)),
        }
    }

    /// The connection is new: the server may have handed this consumer
    /// entries it never saw, so read its pending ones again.
    pub(crate) fn reconnected(&mut self) {
        self.pending_from = Some("0".to_owned());
    }

    /// A read of own pending entries brought these: go on after the last,
    /// or, when none came, the re-read is done.
    pub(crate) fn read_pending(&mut self, entries: &[Entry]) {
        self.delivered(entries);
        self.pending_from = entries.last().map(|e| e.id.clone());
    }

    /// A claim at `now` brought `claimed` entries; `wrapped` when it ended a
    /// pass over the pending list. Until the pass ends, claims go on at
    /// once; a claim that found nothing lets new entries be read first.
    pub(crate) fn claimed(
        &mut self,
        now: Instant,
        claimed: &[Entry],
        wrapped: bool,
        limits: &Limits,
    ) {
        self.delivered(claimed);
        self.next_claim = if wrapped {
            now + claim_interval(limits.claim_idle)
        } else {
            now
        };
        self.new_before_claim = claimed.is_empty();
    }

    /// A read of new entries brought these.
    pub(crate) fn read_new(&mut self, entries: &[Entry]) {
        self.delivered(entries);
        self.new_before_claim = false;
    }

    /// Where a group found deleted is created again from: after the last
    /// entry known delivered to it, or the start of the stream (`0`) when
    /// none is known.
    pub(crate) fn recreate_from(&self) -> &str {
        self.last_delivered.as_deref().unwrap_or("0")
    }

    fn delivered(&mut self, entries: &[Entry]) {
        for e in entries {
            self.last_delivered = entry::later_id(self.last_delivered.take(), &e.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Limits, Next, ReadState, claim_interval};
    use crate::entry::Entry;

    const LIMITS: Limits = Limits {
        batch: 16,
        read_ahead: 0,
        per_transaction: 1,
        block: Duration::from_secs(5),
        claim_idle: Duration::from_secs(60),
    };

    fn entries(ids: &[&str]) -> Vec<Entry> {
        ids.iter()
            .map(|id| Entry {
                id: (*id).to_owned(),
                fields: Some(Vec::new()),
            })
            .collect()
    }

    #[test]
    fn a_new_loop_reads_its_own_pending_entries_to_the_end_first() {
        let now = Instant::now();
        let mut s = ReadState::new(now);
        assert_eq!(
            s.next(now, 4, false, &LIMITS),
            Next::OwnPending {
                from: "0".to_owned(),
                count: 4
            }
        );
        s.read_pending(&entries(&["1-0", "2-0"]));
        assert_eq!(
            s.next(now, 4, false, &LIMITS),
            Next::OwnPending {
                from: "2-0".to_owned(),
                count: 4
            }
        );
        s.read_pending(&[]);
        assert_eq!(s.next(now, 4, false, &LIMITS), Next::Claim { count: 4 });
    }

    #[test]
    fn claims_go_on_until_a_pass_ends_then_wait_half_claim_idle() {
        let now = Instant::now();
        let mut s = ReadState::new(now);
        s.read_pending(&[]);
        s.claimed(now, &entries(&["1-0"]), false, &LIMITS);
        assert_eq!(
            s.next(now, 1, false, &LIMITS),
            Next::Claim { count: 1 },
            "pass not done"
        );
        s.claimed(now, &entries(&["2-0"]), true, &LIMITS);
        let interval = claim_interval(LIMITS.claim_idle);
        assert_eq!(
            s.next(now, 1, false, &LIMITS),
            Next::New {
                count: 1,
                block: LIMITS.block
            },
            "the block ends before the next claim is due only when that comes sooner"
        );
        let later = now + Duration::from_secs(28); // the interval is 30 s
        assert_eq!(
            s.next(later, 1, false, &LIMITS),
            Next::New {
                count: 1,
                block: Duration::from_secs(2)
            },
            "the wait for new entries ends when the claim is due"
        );
        assert_eq!(
            s.next(now + interval, 1, false, &LIMITS),
            Next::Claim { count: 1 }
        );
    }

    #[test]
    fn a_claim_that_found_nothing_lets_new_entries_be_read_before_the_next() {
        let now = Instant::now();
        let mut s = ReadState::new(now);
        s.read_pending(&[]);
        s.claimed(now, &[], false, &LIMITS);
        assert_eq!(
            s.next(now, 2, false, &LIMITS),
            Next::New {
                count: 2,
                block: Duration::from_millis(1)
            },
            "the claim pass is not over: a short wait"
        );
        s.read_new(&[]);
        assert_eq!(s.next(now, 2, false, &LIMITS), Next::Claim { count: 2 });
    }

    #[test]
    fn read_sizes_follow_free_slots_read_ahead_batch_and_transactions() {
        let now = Instant::now();
        let mut s = ReadState::new(now);
        s.read_pending(&[]);
        s.claimed(now, &[], true, &LIMITS);
        let limits = Limits {
            read_ahead: 10,
            per_transaction: 8,
            ..LIMITS
        };
        let new = |free, plain| match s.next(now, free, plain, &limits) {
            Next::New { count, .. } => count,
            other => panic!("{other:?}"),
        };
        assert_eq!(new(2, true), 12, "free slots plus read-ahead");
        assert_eq!(new(10, true), 16, "at most batch");
        assert_eq!(new(2, false), 96, "a transaction of 8 per slot");
        assert_eq!(new(0, true), 10, "no free slot: the read-ahead alone");
        let none = Limits {
            read_ahead: 0,
            ..LIMITS
        };
        assert!(
            matches!(s.next(now, 0, true, &none), Next::New { count: 1, .. }),
            "never COUNT 0"
        );
    }

    #[test]
    fn a_reconnect_reads_own_pending_entries_again() {
        let now = Instant::now();
        let mut s = ReadState::new(now);
        s.read_pending(&[]);
        s.reconnected();
        assert!(
            matches!(s.next(now, 1, true, &LIMITS), Next::OwnPending { ref from, .. } if from == "0")
        );
    }

    #[test]
    fn a_deleted_group_is_recreated_after_the_last_delivered_entry() {
        let now = Instant::now();
        let mut s = ReadState::new(now);
        assert_eq!(s.recreate_from(), "0", "nothing known: from the start");
        s.read_pending(&entries(&["1700000000000-3"]));
        s.read_new(&entries(&["1700000000000-10", "1700000000000-9"]));
        s.claimed(now, &entries(&["5-0"]), true, &LIMITS);
        assert_eq!(
            s.recreate_from(),
            "1700000000000-10",
            "the newest, by number"
        );
    }

    #[test]
    fn claims_are_looked_for_every_half_claim_idle_within_bounds() {
        assert_eq!(
            claim_interval(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            claim_interval(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(
            claim_interval(Duration::from_millis(10)),
            Duration::from_millis(50)
        );
        assert_eq!(
            claim_interval(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
    }
}
