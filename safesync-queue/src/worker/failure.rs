//! Failures you can see: a [`FailedDelivery`] for every delivery that
//! failed, kept as the last error of its stream and group in the run's
//! [`Summary`](super::Summary), in a small Redis hash that
//! [`health`](crate::health) reads, and handed to the hook of
//! [`Worker::on_failure`](super::Worker::on_failure).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::last_error_key;

/// One failed delivery of an entry: what [`Worker::on_failure`]'s hook is
/// given, what [`Summary::last_errors`](super::Summary::last_errors) keeps
/// per stream and group, and what [`Health::last_error`](crate::Health::last_error)
/// reads back.
///
/// [`Worker::on_failure`]: super::Worker::on_failure
///
/// ```
/// # fn show(f: &safesync_queue::FailedDelivery) {
/// println!(
///     "{}/{}: entry {} failed on delivery {}: {}",
///     f.stream, f.group, f.id, f.delivery, f.reason
/// );
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedDelivery {
    /// The handler's stream.
    pub stream: String,
    /// The handler's consumer group.
    pub group: String,
    /// The entry's id (on the group's replay stream, for a replayed dead
    /// letter).
    pub id: String,
    /// Its delivery count when it failed: 1 on the first delivery.
    pub delivery: u64,
    /// Why: the handler's error, panic or timeout, a rejection, or the
    /// database's error around the handler (at most 1 KiB, cut with a
    /// marker).
    pub reason: String,
    /// The consumer it failed on.
    pub consumer: String,
    /// True when this failure moved the entry to the dead letters (a
    /// rejection, or a failure on the last allowed delivery).
    pub dead_lettered: bool,
    /// When it failed, to the millisecond.
    pub at: SystemTime,
}

/// The hook of [`Worker::on_failure`](super::Worker::on_failure).
pub(crate) type Hook = Arc<dyn Fn(&FailedDelivery) + Send + Sync>;

/// Calls `hook` with `f`; a panic of the hook is caught and logged, never
/// passed on.
pub(crate) fn call(hook: &Hook, f: &FailedDelivery) {
    if catch_unwind(AssertUnwindSafe(|| hook(f))).is_err() {
        tracing::error!(
            stream = %f.stream,
            group = %f.group,
            id = %f.id,
            "the `Worker::on_failure` hook panicked; the worker goes on"
        );
    }
}

/// The fields of the last-error hash, in order.
const FIELDS: [&str; 6] = [
    "id",
    "delivery",
    "reason",
    "consumer",
    "dead_lettered",
    "at_ms",
];

/// The `HSET` that makes `f` the last error of its stream and group: one
/// small hash of fixed fields, overwritten by each failure (its size is
/// bounded by the 1 KiB reason).
pub(crate) fn record(f: &FailedDelivery) -> redis::Cmd {
    let at_ms =
        f.at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut cmd = redis::cmd("HSET");
    cmd.arg(last_error_key(&f.stream, &f.group))
        .arg(FIELDS[0])
        .arg(&f.id)
        .arg(FIELDS[1])
        .arg(f.delivery)
        .arg(FIELDS[2])
        .arg(&f.reason)
        .arg(FIELDS[3])
        .arg(&f.consumer)
        .arg(FIELDS[4])
        .arg(u8::from(f.dead_lettered))
        .arg(FIELDS[5])
        .arg(at_ms);
    cmd
}

/// The failure stored by [`record`] for `stream` and `group`, from the
/// hash's fields; `None` when there is none (or it is not one of ours).
pub(crate) fn parse(
    stream: &str,
    group: &str,
    mut hash: HashMap<String, String>,
) -> Option<FailedDelivery> {
    let mut take = |k: &str| hash.remove(k);
    let id = take(FIELDS[0])?;
    let delivery = take(FIELDS[1])?.parse().ok()?;
    let reason = take(FIELDS[2])?;
    let consumer = take(FIELDS[3]).unwrap_or_default();
    let dead_lettered = take(FIELDS[4]).as_deref() == Some("1");
    let at_ms = take(FIELDS[5]).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(FailedDelivery {
        stream: stream.to_owned(),
        group: group.to_owned(),
        id,
        delivery,
        reason,
        consumer,
        dead_lettered,
        at: UNIX_EPOCH + Duration::from_millis(at_ms),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    use super::{FailedDelivery, Hook, call, parse, record};

    fn failure() -> FailedDelivery {
        FailedDelivery {
            stream: "orders".into(),
            group: "billing".into(),
            id: "1-0".into(),
            delivery: 3,
            reason: "boom".into(),
            consumer: "c".into(),
            dead_lettered: true,
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn a_recorded_failure_reads_back_the_same() {
        let f = failure();
        let packed = record(&f).get_packed_command();
        let text = String::from_utf8_lossy(&packed);
        assert!(text.contains("{orders}:last-error:billing"), "{text}");
        let mut args = text.split("\r\n").filter(|s| !s.starts_with(['*', '$']));
        assert_eq!(args.next(), Some("HSET"));
        args.next();
        let mut hash = HashMap::new();
        while let (Some(k), Some(v)) = (args.next(), args.next()) {
            hash.insert(k.to_owned(), v.to_owned());
        }
        assert_eq!(parse("orders", "billing", hash), Some(f));
        assert_eq!(parse("orders", "billing", HashMap::new()), None);
    }

    #[test]
    fn a_panicking_hook_is_caught() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&calls);
        let hook: Hook = Arc::new(move |_: &FailedDelivery| {
            seen.fetch_add(1, Ordering::Relaxed);
            panic!("hook bug");
        });
        call(&hook, &failure());
        call(&hook, &failure());
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }
}
