//! The ledger and the group's housekeeping on a real Redis and every SQL
//! backend: `prune_ledger`, a deleted group recreated while the ledger skips
//! what was done, pending entries that were trimmed; and, on Redis alone,
//! `health`'s longest idle entry and `MAXLEN` trimming.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::queue::*;
use common::{Backend, TestDb};
use safesync::redis;
use safesync::{CancellationToken, SendOptions, Stream, Worker};

async fn prune_ledger_deletes_only_rows_older_than_the_age_given(backend: Backend) {
    let t = TestDb::new(backend).await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    for id in ["1-0", "2-0"] {
        t.db.execute_with(
            "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) VALUES ('s', 'g', ?)",
            (id,),
        )
        .await
        .unwrap();
    }
    t.db.execute_with(
        "UPDATE safesync_queue_ledger SET processed_at = '2000-01-01 00:00:00' WHERE entry_id = ?",
        ("1-0",),
    )
    .await
    .unwrap();
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let prune = |age| safesync::queue::prune_ledger(&t.db, age);
    assert_eq!(prune(century).await.unwrap(), 0);
    assert_eq!(prune(Duration::from_secs(3600)).await.unwrap(), 1);
    let left =
        t.db.fetch_one::<i64>(
            "SELECT COUNT(*) FROM safesync_queue_ledger WHERE entry_id <> ?",
            ("1-0",),
        )
        .await
        .unwrap();
    assert_eq!(left, 1, "the newer row stays");
    t.cleanup().await;
}

// --- Ledger and group housekeeping -------------------------------------------

async fn a_deleted_group_is_recreated_and_the_ledger_skips_what_was_done(backend: Backend) {
    let t = setup_orders(backend, 6).await;
    let stream = unique_stream("nogroup");
    send_orders(stream, 1..=3).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for("3 processed", Duration::from_secs(20), || async move {
        processed_count(db).await == 3
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
    // Recreated after the last entry delivered: only the new three come.
    wait_for("6 processed", Duration::from_secs(20), || async move {
        processed_count(db).await == 6 && pending(stream).await == 0
    })
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!((s.processed, s.duplicates), (6, 0), "{s:?}");
    for (id, (_, hits)) in orders(&t.db).await {
        assert_eq!(hits, 1, "order {id}");
    }
    assert_eq!(
        safesync::queue::prune_ledger(&t.db, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(1100)).await; // SQLite's timestamps are in seconds
    assert_eq!(
        safesync::queue::prune_ledger(&t.db, Duration::ZERO)
            .await
            .unwrap(),
        6
    );
    delete_stream(stream).await;
    t.cleanup().await;
}

async fn pending_entries_that_were_trimmed_are_acknowledged_and_counted(backend: Backend) {
    let t = setup_orders(backend, 4).await;
    let stream = unique_stream("trimmed");
    send_orders(stream, 1..=4).await;
    let mut c = conn().await;
    create_group(stream).await;
    // Two entries pending on a crashed consumer, two on the worker's own
    // name (from an earlier run); then all four are deleted.
    for consumer in ["crashed", "me"] {
        read_as(stream, consumer, Some(2), ">").await;
    }
    let _: i64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(pending(stream).await, 4);

    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(200))
            .consumer_name("me")
            .run(stop.clone()),
    );
    wait_for(
        "an empty pending list",
        Duration::from_secs(20),
        || async move { pending(stream).await == 0 },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.trimmed, s.processed, s.dead_lettered),
        (4, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.acked + s.already_acked, 4, "{s:?}");
    assert_eq!(behaviour.total.load(Ordering::Relaxed), 0);
    delete_stream(stream).await;
    t.cleanup().await;
}

/// Two pending entries, the later one idle longer: health reports the
/// longest idle time, not the lowest id's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_the_longest_idle_pending_entry() {
    let stream = unique_stream("idle");
    send_orders(stream, 1..=2).await;
    let mut c = conn().await;
    create_group(stream).await;
    let ids = read_as(stream, "c", Some(2), ">").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Claiming the first entry again makes it idle 0: the second is the
    // longest idle.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(stream)
        .arg("billing")
        .arg("c")
        .arg(0)
        .arg(&ids[0])
        .query_async(&mut c)
        .await
        .unwrap();
    let h = safesync::queue::health(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!(h.pending, 2);
    let idle = h.oldest_pending_idle.unwrap();
    assert!(idle >= Duration::from_millis(600), "{idle:?}");
    delete_stream(stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maxlen_trims_the_stream() {
    let stream = unique_stream("trim");
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    let mut c = conn().await;
    let opts = SendOptions::default().maxlen(10);
    for order_id in 0..1000 {
        orders
            .send_on(&mut c, &OrderPlaced { order_id }, &opts)
            .await
            .unwrap();
    }
    let len: u64 = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((10..1000).contains(&len), "{len}");
    delete_stream(stream).await;
}

/// The ledger row goes into the text of the statements sent with `BEGIN`
/// (on MariaDB and PostgreSQL) only for names that are plain text; a
/// stream whose name is SQL stays a name: the canary survives and every
/// entry is applied once, under its exact stream name in the ledger.
async fn a_stream_named_like_sql_stays_a_name(backend: Backend) {
    let t = setup_orders(backend, 3).await;
    t.db.execute("CREATE TABLE canary (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    t.db.execute("INSERT INTO canary (id) VALUES (1)")
        .await
        .unwrap();
    let u = unique_stream("sqlname");
    let stream: &'static str = Box::leak(
        format!(
            "{u}', 'g', '0-0'); DELETE FROM canary; \
             INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) VALUES ('{u}"
        )
        .into_boxed_str(),
    );
    send_orders(stream, 1..=3).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for("3 processed", Duration::from_secs(20), || async move {
        processed_count(db).await == 3 && pending(stream).await == 0
    })
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!((s.processed, s.failed), (3, 0), "{s:?}");
    for (id, (_, hits)) in orders(&t.db).await {
        assert_eq!(hits, 1, "order {id}");
    }
    let canary =
        t.db.fetch_one::<i64>("SELECT COUNT(*) FROM canary WHERE id = ?", (1,));
    assert_eq!(canary.await.unwrap(), 1, "the stream's name ran as SQL");
    let rows = t.db.fetch_one::<i64>(
        "SELECT COUNT(*) FROM safesync_queue_ledger WHERE stream = ? AND consumer_group = 'billing'",
        (stream,),
    );
    assert_eq!(rows.await.unwrap(), 3, "the ledger keeps the exact name");
    delete_stream(stream).await;
    t.cleanup().await;
}

on_every_backend!(
    prune_ledger_deletes_only_rows_older_than_the_age_given,
    a_deleted_group_is_recreated_and_the_ledger_skips_what_was_done,
    pending_entries_that_were_trimmed_are_acknowledged_and_counted,
    a_stream_named_like_sql_stays_a_name,
);
