//! The CPU time of this process (every thread, user + system), to show
//! the client-side cost of an operation apart from the database's time,
//! which on a shared machine drifts far more than the client's CPU does.

use std::time::Duration;

/// Linux's `USER_HZ`, the unit of `/proc/self/stat`'s times (100 on every
/// mainstream architecture).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time used by the process so far; `None` where `/proc` is missing.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count after its `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // `rest` begins at field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// CPU used since `start` (a [`process_cpu`] reading).
pub(crate) fn since(start: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(start?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_moves_forward() {
        let Some(a) = super::process_cpu() else {
            return; // no /proc here
        };
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(super::process_cpu().unwrap() >= a);
    }
}
