//! Handler failures on a real Redis and every SQL backend: version
//! conflicts retried in place, a failing `BEGIN` that is not the handler's
//! failure, the handler timeout, failures retried after `claim_idle` then
//! dead-lettered, and an entry over the delivery limit.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Backend;
use common::queue::*;
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::{CancellationToken, Handler, Worker};

// --- Retries in place and the handler timeout -------------------------------

/// Adds one to the `hits` of order `order_id % 3 + 1`, the way a new user
/// writes it: `find`, then a versioned `update` (no lock), so concurrent
/// handlers of one order conflict.
struct Tally {
    stream: &'static str,
    retry: Option<RetryPolicy>,
}

impl Handler for Tally {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle<'t>(
        &'t self,
        tx: &'t mut Tx<'_>,
        msg: OrderPlaced,
    ) -> BoxFuture<'t, Result<(), Error>> {
        Box::pin(async move {
            let id = msg.order_id % 3 + 1;
            let mut order = Order::find(tx, &id).await?.ok_or_else(Error::not_found)?;
            order.hits += 1;
            order.update(tx).await
        })
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.retry
    }
}

/// 500 messages on 3 rows, 8 in flight: the version conflicts are retried
/// at once, in new transactions, not left to wait `claim_idle`.
async fn version_conflicts_are_retried_in_place_not_after_claim_idle(backend: Backend) {
    const M: i64 = 500;
    let t = setup_orders(backend, 3).await;
    let stream = unique_stream("conflicts");
    send_orders(stream, 1..=M).await;
    let started = Instant::now();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Tally {
                stream,
                retry: None,
            })
            .concurrency(8)
            .block(Duration::from_millis(200))
            .claim_idle(Duration::from_secs(30))
            .run(stop.clone()),
    );
    let expected: HashMap<i64, i64> = (1..=3)
        .map(|id| {
            (
                id,
                (1..=M).filter(|m| m % 3 + 1 == id).map(|_| 1).sum::<i64>(),
            )
        })
        .collect();
    let db = &t.db;
    let hits = || async move {
        orders(db)
            .await
            .into_iter()
            .map(|(id, (_, hits))| (id, hits))
            .collect::<HashMap<_, _>>()
    };
    // A third of `claim_idle`: nothing waits for a claim (about 1–2 s
    // here).
    wait_for(
        "every message counted",
        Duration::from_secs(10),
        || async move { hits().await.values().sum::<i64>() == M && pending(stream).await == 0 },
    )
    .await;
    let elapsed = started.elapsed();
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(hits().await, expected, "{s:?}");
    assert_eq!(
        (s.processed, s.failed, s.claimed, s.acked),
        (500, 0, 0, 500),
        "{s:?}"
    );
    if backend != Backend::Sqlite {
        // SQLite runs one write transaction at a time: nothing conflicts.
        assert!(s.retried > 0, "conflicts happened and were retried: {s:?}");
    }
    eprintln!("{backend:?}: 500 messages in {elapsed:?}, {s:?}");
    delete_stream(stream).await;
    t.cleanup().await;
}

/// `retry = false`, or its hand-written form: the conflicts fail the
/// delivery at once and wait for a claim.
async fn without_retries_conflicts_fail_the_delivery(backend: Backend) {
    const M: i64 = 100;
    let t = setup_orders(backend, 3).await;
    let stream = unique_stream("no-retry");
    send_orders(stream, 1..=M).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Tally {
                stream,
                retry: Some(RetryPolicy::never()),
            })
            .concurrency(8)
            .block(Duration::from_millis(200))
            .claim_idle(Duration::from_secs(30))
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for(
        "every message handled once",
        Duration::from_secs(20),
        || async move {
            let o = orders(db).await;
            let hits: i64 = o.values().map(|(_, h)| h).sum();
            // Before the worker has created its group, there is no health.
            let Ok(h) = safesync::queue::health(&redis_client(), stream, "billing").await else {
                return false;
            };
            hits + i64::try_from(h.pending).unwrap() == M
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert!(s.failed > 0, "conflicts failed deliveries: {s:?}");
    assert_eq!(s.retried, 0, "{s:?}");
    delete_stream(stream).await;
    t.cleanup().await;
}

/// Conflicts on its first call, after closing the worker's pool: the
/// retry's `BEGIN` then fails for good.
struct ClosesThePool {
    stream: &'static str,
    db: Db,
    calls: Arc<AtomicU64>,
}

impl Handler for ClosesThePool {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle<'t>(&'t self, _: &'t mut Tx<'_>, _: OrderPlaced) -> BoxFuture<'t, Result<(), Error>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let db = self.db.clone();
        // Closing waits for this transaction's connection: not awaited here.
        tokio::spawn(async move { db.close().await });
        Box::pin(async {
            Err(Error::Conflict {
                table: "orders",
                key: "1".into(),
                expected: 0,
                actual: 1,
            })
        })
    }
}

/// A retried conflict whose next `BEGIN` fails (the database gone) is a
/// database failure, not the handler's: even on its last allowed delivery
/// the entry stays pending instead of moving to the dead letters.
async fn a_begin_that_fails_while_retrying_is_not_the_handlers_failure(backend: Backend) {
    let t = setup_orders(backend, 1).await;
    let stream = unique_stream("begin-fails");
    send_orders(stream, [1]).await;
    let db = t.other_db().await;
    let calls = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db.clone(), redis_client())
            .handle(ClosesThePool {
                stream,
                db,
                calls: Arc::clone(&calls),
            })
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_secs(30))
            // No second delivery within the test (it would be over the
            // limit, and dead-lettered for that), however slow the
            // machine: only the first delivery's failure is judged.
            .redelivery_backoff(Duration::from_secs(20), Duration::from_secs(30))
            .max_deliveries(1)
            .run(stop.clone()),
    );
    let calls = &calls;
    wait_for("the handler run", Duration::from_secs(10), || async move {
        calls.load(Ordering::Relaxed) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!((s.failed, s.dead_lettered, s.processed), (1, 0, 0), "{s:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 1, "no second attempt ran");
    assert_eq!(dead_letter_count(stream).await, 0);
    assert_eq!(
        pending(stream).await,
        1,
        "left pending for a later delivery"
    );
    delete_stream(stream).await;
    t.cleanup().await;
}

/// A handler that never returns for order 7: cancelled at the timeout,
/// rolled back, failed like any failure and dead-lettered after
/// `max_deliveries`, while the other orders flow; a stop during a hung
/// handler waits for its timeout only.
async fn a_handler_past_its_timeout_is_cancelled_then_dead_lettered(backend: Backend) {
    const M: i64 = 40;
    let t = setup_orders(backend, M).await;
    let stream = unique_stream("timeout");
    send_orders(stream, 1..=M).await;
    let behaviour = Arc::new(Behaviour {
        hang_on: HashSet::from([7]),
        ..Behaviour::default()
    });
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .concurrency(4)
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(800))
            .handler_timeout(Duration::from_millis(400))
            .drain_timeout(Duration::from_secs(30))
            .max_deliveries(3)
            .run(stop.clone()),
    );
    let db = &t.db;
    // The others do not wait for the hung one.
    wait_for(
        "every other order processed",
        Duration::from_secs(3),
        || async move { processed_count(db).await == usize::try_from(M - 1).unwrap() },
    )
    .await;
    wait_for(
        "order 7 dead-lettered",
        Duration::from_secs(20),
        || async move { dead_letter_count(stream).await == 1 && pending(stream).await == 0 },
    )
    .await;
    let dead = dead_letters_of(stream).await;
    assert_eq!(dead[0].data(), Some(&br#"{"order_id":7}"#[..]));
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(
        dead[0].reason,
        "the handler failed on delivery 3 of at most 3: timed out after 400ms (cancelled and rolled back)"
    );
    let o = orders(&t.db).await;
    assert_eq!(o[&7], ("new".to_owned(), 0), "its writes were rolled back");

    // Hung again, then stopped: the stop waits for the timeout, not the
    // 30 s drain.
    send_orders(stream, [7]).await;
    let calls = || behaviour.calls.lock().unwrap().get(&7).copied();
    wait_for(
        "order 7 running again",
        Duration::from_secs(5),
        || async move { calls() == Some(4) },
    )
    .await;
    let stopping = Instant::now();
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        (
            s.processed,
            s.failed,
            s.timed_out,
            s.dead_lettered,
            s.abandoned
        ),
        (u64::try_from(M - 1).unwrap(), 4, 4, 1, 0),
        "{s:?}"
    );
    for (id, (status, hits)) in orders(&t.db).await {
        if id != 7 {
            assert_eq!((status.as_str(), hits), ("processed", 1), "order {id}");
        }
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- Handler failures: retried after claim_idle, then dead letters ------

async fn a_failing_handler_is_redelivered_after_its_backoff_then_dead_lettered(backend: Backend) {
    let t = setup_orders(backend, 3).await;
    let stream = unique_stream("retry");
    send_orders(stream, 1..=3).await;
    let behaviour = Arc::new(Behaviour {
        fail_first: HashMap::from([(1, 2)]),
        panic_on: HashSet::from([2]),
        ..Behaviour::default()
    });
    let registry = safesync::prometheus::Registry::new();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .concurrency(2)
            .block(Duration::from_millis(100))
            // Above what a panic takes to unwind and print its backtrace
            // on a loaded machine: a claim while the failed delivery is
            // still in flight would count a delivery that never runs.
            .claim_idle(Duration::from_secs(1))
            .redelivery_backoff(Duration::from_millis(200), Duration::from_millis(400))
            .max_deliveries(3)
            .metrics(safesync::queue::QueueMetrics::register(&registry).unwrap())
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for(
        "order 1 processed and order 2 dead",
        Duration::from_secs(30),
        || async move {
            let o = orders(db).await;
            o[&1].0 == "processed"
                && dead_letter_count(stream).await == 1
                && pending(stream).await == 0
        },
    )
    .await;
    let elapsed = started.elapsed();
    stop.cancel();
    let s = worker.await.unwrap().unwrap();

    // Order 1 failed twice, then succeeded on its third delivery; order 2
    // panicked on all three; order 3 went through at once.
    let calls = behaviour.calls.lock().unwrap().clone();
    assert_eq!(calls, HashMap::from([(1, 3), (2, 3), (3, 1)]));
    assert!(
        elapsed >= Duration::from_millis(300),
        "two back-offs, of 100-200 ms then 200-400 ms: {elapsed:?}"
    );
    assert_eq!(
        (s.processed, s.failed, s.claimed, s.dead_lettered, s.acked),
        (2, 5, 4, 1, 3),
        "{s:?}"
    );
    let o = orders(&t.db).await;
    assert_eq!(
        o[&1],
        ("processed".to_owned(), 1),
        "failed attempts rolled back"
    );
    assert_eq!(
        o[&2],
        ("new".to_owned(), 0),
        "panicking attempts rolled back"
    );
    assert_eq!(o[&3], ("processed".to_owned(), 1));

    let dead = dead_letters_of(stream).await;
    assert_eq!(dead[0].deliveries, 3);
    assert!(
        dead[0].reason.starts_with("the handler failed on delivery 3 of at most 3: the handler panicked: order 2 makes the handler panic"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].data(), Some(&br#"{"order_id":2}"#[..]));

    let text = safesync::prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let labels = format!(r#"{{group="billing",stream="{stream}"}}"#);
    for (name, value) in [
        ("safesync_queue_messages_read_total", 7),
        ("safesync_queue_claimed_total", 4),
        ("safesync_queue_ack_total", 3),
        ("safesync_queue_dead_lettered_total", 1),
    ] {
        let line = format!("{name}{labels} {value}");
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    for (outcome, n) in [("ok", 2), ("error", 2), ("panic", 3)] {
        let line = format!(
            r#"safesync_queue_handler_latency_seconds_count{{group="billing",outcome="{outcome}",stream="{stream}"}} {n}"#
        );
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

async fn an_entry_over_the_delivery_limit_is_dead_lettered_when_claimed(backend: Backend) {
    let t = setup_orders(backend, 1).await;
    let stream = unique_stream("overlimit");
    send_orders(stream, [1]).await;
    // A consumer that crashed on this entry three times.
    create_group(stream).await;
    for from in [">", "0", "0"] {
        read_as(stream, "crashed", None, from).await;
    }
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(200))
            .max_deliveries(3)
            .run(stop.clone()),
    );
    wait_for("a dead letter", Duration::from_secs(20), || async move {
        dead_letter_count(stream).await == 1
    })
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.claimed, s.dead_lettered, s.processed, s.acked),
        (1, 1, 0, 1),
        "{s:?}"
    );
    assert_eq!(
        behaviour.total.load(Ordering::Relaxed),
        0,
        "the handler never ran"
    );
    let dead = dead_letters_of(stream).await;
    assert_eq!(dead[0].deliveries, 4);
    assert_eq!(
        dead[0].reason,
        "delivered 4 times, more than max_deliveries 3; last error: not seen by this worker"
    );
    assert_eq!(pending(stream).await, 0);
    delete_stream(stream).await;
    t.cleanup().await;
}

on_every_backend!(
    version_conflicts_are_retried_in_place_not_after_claim_idle,
    a_begin_that_fails_while_retrying_is_not_the_handlers_failure,
    a_failing_handler_is_redelivered_after_its_backoff_then_dead_lettered,
    an_entry_over_the_delivery_limit_is_dead_lettered_when_claimed,
);

// SQLite runs one write transaction at a time: its handlers never conflict,
// and a hung transaction holds up every other (their deadlines run while
// they wait for its write lock).
on_servers!(
    without_retries_conflicts_fail_the_delivery,
    a_handler_past_its_timeout_is_cancelled_then_dead_lettered,
);
