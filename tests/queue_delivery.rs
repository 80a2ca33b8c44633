//! The queue against a real Redis and every SQL backend: every message
//! handled exactly once by concurrent workers, a commit whose ack was lost
//! taking effect once (the ledger), several entries per transaction, and
//! killed Redis connections reopened without losing anything.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Backend;
use common::queue::*;
use safesync::redis;
use safesync::{CancellationToken, SendOptions, Stream, Worker};

// --- Many messages, several workers, every backend ----------------------

async fn every_order_is_processed_exactly_once_by_concurrent_workers(backend: Backend) {
    const M: i64 = 500;
    let t = setup_orders(backend, M).await;
    let stream = unique_stream("w5");
    send_orders(stream, 1..=M).await;
    let behaviour = Arc::new(Behaviour::default());

    let stop = CancellationToken::new();
    let run = |name: &str| {
        tokio::spawn(
            Worker::new(t.db.clone(), redis_client())
                .handle(handler(stream, &behaviour))
                .concurrency(4)
                .batch(8)
                .block(Duration::from_millis(500))
                .consumer_name(name)
                .run(stop.clone()),
        )
    };
    let (a, b) = (run("w5-a"), run("w5-b"));
    let db = &t.db;
    wait_for(
        "every order processed",
        Duration::from_secs(120),
        || async move { processed_count(db).await == usize::try_from(M).unwrap() },
    )
    .await;
    wait_for(
        "an empty pending list",
        Duration::from_secs(10),
        || async move { pending(stream).await == 0 },
    )
    .await;
    stop.cancel();
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());

    let all = orders(&t.db).await;
    assert_eq!(all.len(), usize::try_from(M).unwrap());
    for (id, (status, hits)) in &all {
        assert_eq!((status.as_str(), *hits), ("processed", 1), "order {id}");
    }
    assert_eq!(add(&a, &b), (500, 500, 0, 0), "{a:?} {b:?}");
    assert!(
        a.processed > 0 && b.processed > 0,
        "both workers took part: {a:?} {b:?}"
    );
    assert_eq!(behaviour.total.load(Ordering::Relaxed), 500);

    let h = safesync::queue::health(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!((h.length, h.pending, h.dead_letters), (500, 0, 0));
    assert_eq!(h.oldest_pending_idle, None);
    assert_eq!(h.lag, Some(0));
    let mut names: Vec<&str> = h.consumers.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["w5-a", "w5-b"]);

    delete_stream(stream).await;
    t.cleanup().await;
}

// --- Commit without ack: the ledger makes the effect happen once --------

async fn a_commit_whose_ack_was_lost_takes_effect_once(backend: Backend) {
    const M: i64 = 20;
    let t = setup_orders(backend, M).await;
    let stream = unique_stream("lostack");
    send_orders(stream, 1..=M).await;
    let behaviour = Arc::new(Behaviour::default());

    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .concurrency(3)
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(500))
            .fail_before_ack_for_tests(5)
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for(
        "every order processed",
        Duration::from_secs(30),
        || async move { processed_count(db).await == 20 },
    )
    .await;
    // The five unacknowledged entries are claimed after 500 ms, recognised
    // by the ledger and only acknowledged.
    wait_for(
        "an empty pending list",
        Duration::from_secs(30),
        || async move { pending(stream).await == 0 },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.processed, s.duplicates, s.acked, s.claimed, s.failed),
        (20, 5, 20, 5, 0),
        "{s:?}"
    );
    assert_eq!(
        behaviour.total.load(Ordering::Relaxed),
        20,
        "the handler ran once per entry"
    );
    for (id, (_, hits)) in orders(&t.db).await {
        assert_eq!(hits, 1, "order {id}");
    }
    delete_stream(stream).await;

    // The same fault with the ledger off runs those handlers twice: the
    // ledger is what made the difference above.
    let stream = unique_stream("noledger");
    send_orders(stream, 1..=4).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(300))
            .ledger(false)
            .fail_before_ack_for_tests(2)
            .run(stop.clone()),
    );
    let total = &behaviour.total;
    wait_for(
        "6 more handler runs",
        Duration::from_secs(30),
        || async move { total.load(Ordering::Relaxed) == 26 && pending(stream).await == 0 },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!((s.processed, s.duplicates), (6, 0), "{s:?}");
    let hits: i64 = orders(&t.db)
        .await
        .iter()
        .filter(|(id, _)| **id <= 4)
        .map(|(_, (_, h))| h - 1)
        .sum();
    assert_eq!(
        hits, 6,
        "4 first deliveries + 2 redelivered without a ledger"
    );
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- Several entries per transaction --------------------------------------

/// Entries share transactions; a handler that fails (an error, a panic, a
/// first delivery that fails) rolls its group back, and each entry of the
/// group is then handled alone: every effect lands once, the poison ones
/// never, and nothing stays pending. An entry whose ledger row is already
/// there (its effect committed earlier) makes its group fall back too, and
/// is only acknowledged; so are entries whose acks were lost after their
/// shared commit, when they are claimed again.
async fn shared_transactions_apply_each_entry_once_and_fall_back_on_failure(backend: Backend) {
    const M: i64 = 200;
    let t = setup_orders(backend, M).await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    let stream = unique_stream("pertx");
    let orders_stream: Stream<OrderPlaced> = Stream::new(stream);
    let mut c = conn().await;
    let mut ids = HashMap::new();
    for order_id in 1..=M {
        let id = orders_stream
            .send_on(&mut c, &OrderPlaced { order_id }, &SendOptions::default())
            .await
            .unwrap();
        ids.insert(order_id, id);
    }
    // Order 30 was handled before: its ledger row is there.
    t.db.execute_with(
        "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
         VALUES (?, 'billing', ?)",
        (stream, ids[&30].as_str()),
    )
    .await
    .unwrap();
    let behaviour = Arc::new(Behaviour {
        fail_first: HashMap::from([(7, u64::MAX), (13, 1)]),
        panic_on: HashSet::from([50]),
        ..Behaviour::default()
    });

    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .concurrency(2)
            .messages_per_transaction(16)
            .block(Duration::from_millis(100))
            // The handler timeout (three quarters of this) bounds a group
            // of 16 on a loaded machine: not much shorter.
            .claim_idle(Duration::from_secs(1))
            .max_deliveries(2)
            .fail_before_ack_for_tests(3)
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for(
        "every good order processed, nothing pending",
        Duration::from_secs(60),
        || async move {
            processed_count(db).await == usize::try_from(M - 3).unwrap()
                && pending(stream).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();

    for (id, (status, hits)) in orders(&t.db).await {
        let want = if [7, 30, 50].contains(&id) {
            ("new", 0)
        } else {
            ("processed", 1)
        };
        assert_eq!((status.as_str(), hits), want, "order {id}");
    }
    assert_eq!(
        (s.processed, s.duplicates, s.dead_lettered, s.acked),
        (197, 4, 2, 200),
        "{s:?}"
    );
    assert!(
        s.transactions < 100,
        "entries shared transactions: {} for {} entries",
        s.transactions,
        s.processed
    );
    let h = safesync::queue::health(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!((h.pending, h.dead_letters), (0, 2));
    delete_stream(stream).await;
    t.cleanup().await;
}

async fn killed_connections_are_reopened_and_nothing_is_lost(backend: Backend) {
    let t = setup_orders(backend, 20).await;
    let stream = unique_stream("killed");
    let consumer = common::unique("killme");
    send_orders(stream, 1..=10).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .block(Duration::from_millis(300))
            .consumer_name(consumer.clone())
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for("10 processed", Duration::from_secs(20), || async move {
        processed_count(db).await == 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await; // blocked in a read again

    // Kill the worker's readers and side connection, as a server restart or
    // a proxy would.
    let mut c = conn().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    let ids: Vec<&str> = list
        .lines()
        .filter(|l| {
            l.split(' ').any(|kv| {
                kv.strip_prefix("name=")
                    .is_some_and(|n| n.ends_with(&consumer))
            })
        })
        .filter_map(|l| l.split(' ').find_map(|kv| kv.strip_prefix("id=")))
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "the readers of the stream and of the replay stream, and the side connection, are named: {list}"
    );
    for id in ids {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut c)
            .await
            .unwrap();
    }

    send_orders(stream, 11..=20).await;
    wait_for(
        "20 processed, nothing pending",
        Duration::from_secs(30),
        || async move { processed_count(db).await == 20 && pending(stream).await == 0 },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!((s.processed, s.acked, s.duplicates), (20, 20, 0), "{s:?}");
    delete_stream(stream).await;
    t.cleanup().await;
}

on_every_backend!(
    every_order_is_processed_exactly_once_by_concurrent_workers,
    a_commit_whose_ack_was_lost_takes_effect_once,
    shared_transactions_apply_each_entry_once_and_fall_back_on_failure,
    killed_connections_are_reopened_and_nothing_is_lost,
);
