//! Handlers without a transaction (`PlainHandler`) on a real Redis, run by
//! a worker on each SQL backend's `Db` (a plain handler does no database
//! work, but the worker takes a `Db` and could touch it): every message
//! once, retries then dead letters, undecodable entries, the timeout, and a
//! deleted group that does not replay history.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::queue::*;
use common::{Backend, TestDb};
use safesync::redis;
use safesync::{CancellationToken, Worker};

async fn a_plain_handler_consumes_every_message_once_without_a_transaction(backend: Backend) {
    const M: i64 = 300;
    let t = TestDb::new(backend).await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    let stream = unique_stream("plain");
    send_orders(stream, 1..=M).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(plain(stream, &behaviour))
            .concurrency(4)
            .batch(16)
            // Entries read ahead are shared out among the four slots.
            .read_ahead(12)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let b = &behaviour;
    wait_for(
        "every message handled, nothing pending",
        Duration::from_secs(60),
        || async move {
            b.total.load(Ordering::Relaxed) >= u64::try_from(M).unwrap()
                && pending(stream).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();

    let calls = behaviour.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), usize::try_from(M).unwrap());
    for id in 1..=M {
        assert_eq!(calls.get(&id), Some(&1), "order {id}");
    }
    assert_eq!(
        (
            s.read,
            s.processed,
            s.acked,
            s.failed,
            s.duplicates,
            s.dead_lettered
        ),
        (300, 300, 300, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        ledger_rows(&t.db).await,
        0,
        "no ledger row for a plain handler"
    );
    let h = safesync::queue::health(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!(
        (h.length, h.pending, h.dead_letters, h.lag),
        (300, 0, 0, Some(0))
    );
    // The typed stream of the macro's handler is the payload's.
    assert_eq!(forward::stream().name(), "safesync-test:plain");
    delete_stream(stream).await;
    t.cleanup().await;
}

async fn a_failing_plain_handler_is_retried_then_dead_lettered(backend: Backend) {
    let t = TestDb::new(backend).await;
    let stream = unique_stream("plain-retry");
    // Order -4 is refused by `forward` itself, on every delivery.
    send_orders(stream, [1, 2, 3, -4]).await;
    let behaviour = Arc::new(Behaviour {
        fail_first: HashMap::from([(1, 2)]),
        panic_on: HashSet::from([2]),
        ..Behaviour::default()
    });
    let started = Instant::now();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(plain(stream, &behaviour))
            .concurrency(2)
            .block(Duration::from_millis(100))
            // Above what a panic takes to unwind and print its backtrace
            // on a loaded machine: a claim while the failed delivery is
            // still in flight would count a delivery that never runs.
            .claim_idle(Duration::from_secs(1))
            .redelivery_backoff(Duration::from_millis(200), Duration::from_millis(400))
            .max_deliveries(3)
            .run(stop.clone()),
    );
    wait_for(
        "two dead letters and nothing pending",
        Duration::from_secs(30),
        || async move { dead_letter_count(stream).await == 2 && pending(stream).await == 0 },
    )
    .await;
    let elapsed = started.elapsed();
    stop.cancel();
    let s = worker.await.unwrap().unwrap();

    // Order 1 failed twice and went through on its third delivery; order 2
    // panicked and order -4 was refused on all three; order 3 went through
    // at once.
    let calls = behaviour.calls.lock().unwrap().clone();
    assert_eq!(calls, HashMap::from([(1, 3), (2, 3), (3, 1), (-4, 3)]));
    assert!(
        elapsed >= Duration::from_millis(300),
        "two back-offs, of 100-200 ms then 200-400 ms: {elapsed:?}"
    );
    assert_eq!(
        (s.processed, s.failed, s.dead_lettered, s.acked),
        (2, 8, 2, 4),
        "{s:?}"
    );
    let dead = dead_letters_of(stream).await;
    let reason = |data: &[u8]| {
        dead.iter().find(|d| d.data() == Some(data)).map_or_else(
            || panic!("no dead letter for {}", String::from_utf8_lossy(data)),
            |d| (d.deliveries, d.reason.clone()),
        )
    };
    let (deliveries, why) = reason(br#"{"order_id":2}"#);
    assert_eq!(deliveries, 3);
    assert!(
        why.starts_with("the handler failed on delivery 3 of at most 3: the handler panicked: order 2 makes the handler panic"),
        "{why}"
    );
    let (deliveries, why) = reason(br#"{"order_id":-4}"#);
    assert_eq!(deliveries, 3);
    assert!(why.ends_with("order -4 is refused"), "{why}");
    delete_stream(stream).await;
    t.cleanup().await;
}

async fn a_plain_handler_dead_letters_undecodable_entries_at_once(backend: Backend) {
    let t = TestDb::new(backend).await;
    let stream = unique_stream("plain-poison");
    let mut c = conn().await;
    send_orders(stream, [1]).await;
    let malformed: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg("{not json")
        .query_async(&mut c)
        .await
        .unwrap();
    let no_data: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("body")
        .arg(r#"{"order_id":2}"#)
        .query_async(&mut c)
        .await
        .unwrap();
    send_orders(stream, [3]).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(plain(stream, &behaviour))
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let seen = &behaviour;
    wait_for(
        "2 handled, 2 dead letters, nothing pending",
        Duration::from_secs(20),
        || async move {
            seen.total.load(Ordering::Relaxed) == 2
                && dead_letter_count(stream).await == 2
                && pending(stream).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.processed, s.dead_lettered, s.acked, s.failed),
        (2, 2, 4, 0),
        "{s:?}"
    );
    assert_eq!(
        behaviour.calls.lock().unwrap().clone(),
        HashMap::from([(1, 1), (3, 1)])
    );
    let dead = dead_letters_of(stream).await;
    for (id, needle) in [
        (
            &malformed,
            "its `data` field is not such JSON: key must be a string",
        ),
        (&no_data, "it has no `data` field (its fields: `body`)"),
    ] {
        let d = dead
            .iter()
            .find(|d| &d.original_id == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}"));
        assert_eq!(d.deliveries, 1, "dead-lettered on the first delivery");
        assert!(
            d.reason
                .starts_with(&format!("cannot decode entry {id} of `{stream}` as `")),
            "{:?}",
            d.reason
        );
        assert!(d.reason.contains(needle), "{:?} lacks {needle:?}", d.reason);
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

/// A plain handler (no transaction) is bounded by the timeout too.
async fn a_plain_handler_past_its_timeout_is_dead_lettered(backend: Backend) {
    let t = TestDb::new(backend).await;
    let stream = unique_stream("plain-timeout");
    send_orders(stream, [1, 2, 3]).await;
    let behaviour = Arc::new(Behaviour {
        hang_on: HashSet::from([2]),
        ..Behaviour::default()
    });
    let registry = safesync::prometheus::Registry::new();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(plain(stream, &behaviour))
            .concurrency(2)
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(600))
            .handler_timeout(Duration::from_millis(200))
            .max_deliveries(2)
            .metrics(safesync::queue::QueueMetrics::register(&registry).unwrap())
            .run(stop.clone()),
    );
    wait_for(
        "one dead letter and nothing pending",
        Duration::from_secs(15),
        || async move { dead_letter_count(stream).await == 1 && pending(stream).await == 0 },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.processed, s.failed, s.timed_out, s.dead_lettered),
        (2, 2, 2, 1),
        "{s:?}"
    );
    let dead = dead_letters_of(stream).await;
    assert_eq!(dead[0].data(), Some(&br#"{"order_id":2}"#[..]));
    assert_eq!(
        dead[0].reason,
        "the handler failed on delivery 2 of at most 2: timed out after 200ms (cancelled and rolled back)"
    );
    let text = safesync::prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    for (outcome, n) in [("ok", 2), ("timeout", 2)] {
        let line = format!(
            r#"safesync_queue_handler_latency_seconds_count{{group="billing",outcome="{outcome}",stream="{stream}"}} {n}"#
        );
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- A quick handler that turns slow keeps its slots ------------------------

/// A plain handler that returns at once gets what was read in few tasks
/// (one share per read once it is known to be quick); when it turns slow,
/// the share under way is shared out among the free slots as soon as one
/// run waits, so slow entries run side by side, not one after another in
/// the task that took them.
async fn a_quick_plain_handler_that_turns_slow_keeps_its_slots(backend: Backend) {
    const M: i64 = 640;
    // In the sixth read of 64, after five reads of quick runs.
    const SLOW: std::ops::RangeInclusive<i64> = 330..=345;
    const PAUSE: Duration = Duration::from_millis(500);
    let t = TestDb::new(backend).await;
    let stream = unique_stream("plain-pace");
    send_orders(stream, 1..=M).await;
    let behaviour = Arc::new(Behaviour {
        slow_on: SLOW.map(|id| (id, PAUSE)).collect(),
        ..Behaviour::default()
    });
    let stop = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(plain(stream, &behaviour))
            .concurrency(16)
            .batch(64)
            .read_ahead(64)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let b = &behaviour;
    wait_for("every entry", Duration::from_secs(30), || async move {
        b.total.load(Ordering::Relaxed) >= u64::try_from(M).unwrap() && pending(stream).await == 0
    })
    .await;
    let took = started.elapsed();
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    // One after another: 16 × 500 ms = 8 s. Side by side: about 1 s (the
    // first slow run waits before the rest are shared out).
    assert!(
        took < PAUSE * 6,
        "16 entries of {PAUSE:?} among {M} took {took:?} at concurrency 16"
    );
    assert_eq!((s.processed, s.failed), (M as u64, 0), "{s:?}");
    let calls = behaviour.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), usize::try_from(M).unwrap());
    assert!(calls.values().all(|&n| n == 1), "each once");
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- A deleted group does not replay history --------------------------------

/// A plain handler has no ledger: a group created again from `0` would
/// run the whole stream again. It starts after the last delivered entry.
async fn a_deleted_group_is_recreated_after_the_last_delivered_entry(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    let stream = unique_stream("nogroup-plain");
    send_orders(stream, 1..=3).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db, redis_client())
            .handle(plain(stream, &behaviour))
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let total = &behaviour.total;
    wait_for("3 handled", Duration::from_secs(20), || async move {
        total.load(Ordering::Relaxed) == 3
    })
    .await;
    let mut c = conn().await;
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream)
        .arg("billing")
        .query_async(&mut c)
        .await
        .unwrap();
    send_orders(stream, 4..=6).await;
    wait_for("6 handled", Duration::from_secs(20), || async move {
        total.load(Ordering::Relaxed) >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        behaviour.calls.lock().unwrap().clone(),
        (1..=6).map(|id| (id, 1)).collect::<HashMap<_, _>>(),
        "nothing before the last delivered entry ran twice"
    );
    assert_eq!(s.processed, 6, "{s:?}");
    delete_stream(stream).await;
    t.cleanup().await;
}

on_every_backend!(
    a_plain_handler_consumes_every_message_once_without_a_transaction,
    a_failing_plain_handler_is_retried_then_dead_lettered,
    a_plain_handler_dead_letters_undecodable_entries_at_once,
    a_plain_handler_past_its_timeout_is_dead_lettered,
    a_quick_plain_handler_that_turns_slow_keeps_its_slots,
    a_deleted_group_is_recreated_after_the_last_delivered_entry,
);
