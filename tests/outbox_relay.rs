//! How the outbox relay wakes and where it runs: on PostgreSQL a commit's
//! `NOTIFY` wakes an idle relay whose poll is an hour away; a `Worker`
//! with `relay_outbox(true)` both relays what `send_in` committed and
//! consumes it, each message once, and stops promptly, on every backend.

#![allow(clippy::manual_assert)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::queue::{
    Behaviour, OrderPlaced, delete_keys, handler, orders, redis_client, send_committed,
    setup_orders, xlen,
};
use common::{Backend, TestDb};
use safesync::{CancellationToken, Relay, Stream, Summary, Worker};

/// Longer than any test here may take: only a notification can explain a
/// delivery while a relay with this poll interval is idle.
const NEVER: Duration = Duration::from_secs(3600);

async fn wait_until_len(stream: &str, n: usize, what: &str) {
    common::queue::wait_for(what, Duration::from_secs(10), || async {
        xlen(stream).await >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_on_postgres_wakes_on_a_commits_notify_not_on_its_poll() {
    let t = TestDb::new(Backend::Postgres).await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    let orders: Stream<OrderPlaced> = Stream::new(common::queue::unique_stream("ob_notify"));
    // Committed before the relay starts: its first pass sends it.
    send_committed(&t.db, &orders, 1..=1).await;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        Relay::new(t.db.clone(), redis_client())
            .poll_interval(NEVER)
            .run(stop.clone()),
    );
    wait_until_len(orders.name(), 1, "the first pass").await;
    // The relay is past its passes and waiting (a poll an hour away).
    tokio::time::sleep(Duration::from_millis(500)).await;

    send_committed(&t.db, &orders, 2..=2).await;
    wait_until_len(orders.name(), 2, "the relay woken by the commit's NOTIFY").await;
    // A rolled-back transaction notifies nothing and sends nothing.
    {
        let mut tx = t.db.begin().await.unwrap();
        orders
            .send_in(&mut tx, &OrderPlaced { order_id: 3 })
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    send_committed(&t.db, &orders, 4..=4).await;
    wait_until_len(orders.name(), 3, "the relay woken again").await;

    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("the relay stops while waiting")
        .unwrap()
        .unwrap();
    assert_eq!(summary.sent, 3, "{summary:?}");
    assert_eq!(xlen(orders.name()).await, 3);
    delete_keys(orders.name()).await;
    t.cleanup().await;
}

/// Starts `worker`, waits a moment, stops it: `Err` if it did not return
/// within 10 s.
async fn stop_promptly(worker: Worker) -> Result<Summary, String> {
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(done) => Ok(done.unwrap().unwrap()),
        Err(_) => Err("the worker did not stop within 10 s".to_owned()),
    }
}

async fn a_worker_with_the_relay_relays_and_consumes_each_message_once(backend: Backend) {
    const N: i64 = 40;
    let t = setup_orders(backend, N + 5).await;
    let name = common::queue::unique_stream("ob_worker");
    let orders_stream: Stream<OrderPlaced> = Stream::new(name);
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(name, &behaviour))
            .concurrency(4)
            .block(Duration::from_millis(200))
            .relay_outbox(true)
            .run(stop.clone()),
    );
    // Producers commit while the worker runs; orders N+1.. roll back.
    for id in 1..=N + 5 {
        let mut tx = t.db.begin().await.unwrap();
        tx.execute_with("UPDATE orders SET status = 'placed' WHERE id = ?", (id,))
            .await
            .unwrap();
        orders_stream
            .send_in(&mut tx, &OrderPlaced { order_id: id })
            .await
            .unwrap();
        if id > N {
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
        }
    }
    let n = usize::try_from(N).unwrap();
    common::queue::wait_for("every order billed", Duration::from_secs(30), || async {
        common::queue::processed_count(&t.db).await >= n
    })
    .await;
    // Time for a second delivery, were there one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap_or_else(|_| panic!("{backend:?}: the worker did not stop within 10 s"))
        .unwrap()
        .unwrap();
    println!("{backend:?}: stopped in {:?}", started.elapsed());

    assert_eq!(summary.outbox.sent, 40, "{backend:?}: {summary:?}");
    assert_eq!(summary.outbox.resends_recognised, 0, "{backend:?}");
    assert_eq!(summary.processed, 40, "{backend:?}: {summary:?}");
    assert_eq!(summary.duplicates, 0, "{backend:?}: {summary:?}");
    assert_eq!(xlen(orders_stream.name()).await, n, "{backend:?}");
    let outbox: i64 =
        t.db.fetch_one("SELECT COUNT(*) FROM safesync_queue_outbox", ())
            .await
            .unwrap();
    assert_eq!(outbox, 0, "{backend:?}: every row relayed");
    let all = orders(&t.db).await;
    for id in 1..=N + 5 {
        let (status, hits) = &all[&id];
        if id <= N {
            assert_eq!(
                (status.as_str(), *hits),
                ("processed", 1),
                "{backend:?}: order {id}"
            );
        } else {
            assert_eq!(
                (status.as_str(), *hits),
                ("new", 0),
                "{backend:?}: order {id} (rolled back)"
            );
        }
    }
    let calls = behaviour.calls.lock().unwrap().clone();
    assert!(
        (1..=N).all(|id| calls.get(&id) == Some(&1)),
        "{backend:?}: one handler call per message: {calls:?}"
    );

    // An idle relay with a poll an hour away stops with the worker too.
    let idle = Worker::new(t.db.clone(), redis_client())
        .handle(handler(name, &behaviour))
        .block(Duration::from_millis(200))
        .with_relay(Relay::new(t.db.clone(), redis_client()).poll_interval(NEVER));
    let summary = stop_promptly(idle)
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    assert_eq!(summary.outbox.sent, 0, "{backend:?}");

    delete_keys(orders_stream.name()).await;
    t.cleanup().await;
}

on_every_backend!(a_worker_with_the_relay_relays_and_consumes_each_message_once);
