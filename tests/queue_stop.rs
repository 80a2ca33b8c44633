//! Stopping the worker on a real Redis and every SQL backend: prompt,
//! nothing lost, a second run takes the rest. (`tests/queue_wire.rs` shows
//! on a private Redis that the prompt stop is `CLIENT UNBLOCK`'s doing, and
//! the drain deadline.)

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Backend;
use common::queue::*;
use safesync::{CancellationToken, Worker};

// --- Stop: prompt, nothing lost ------------------------------------------

async fn cancelling_stops_promptly_and_a_second_run_drains_the_rest(backend: Backend) {
    const M: i64 = 300;
    let t = setup_orders(backend, M).await;
    let stream = unique_stream("stop");
    send_orders(stream, 1..=M).await;
    let behaviour = Arc::new(Behaviour {
        delay: Some(Duration::from_millis(5)),
        ..Behaviour::default()
    });
    let worker = |stop: &CancellationToken| {
        tokio::spawn(
            Worker::new(t.db.clone(), redis_client())
                .handle(handler(stream, &behaviour))
                .concurrency(2)
                .block(Duration::from_secs(5))
                .consumer_name("stopper")
                .run(stop.clone()),
        )
    };

    // Stop in the middle of the work.
    let db = &t.db;
    let stop = CancellationToken::new();
    let first = worker(&stop);
    wait_for(
        "some orders processed",
        Duration::from_secs(30),
        || async move { processed_count(db).await >= 50 },
    )
    .await;
    let cancelled = Instant::now();
    stop.cancel();
    let first = first.await.unwrap().unwrap();
    assert!(
        cancelled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        cancelled.elapsed()
    );
    assert!(first.processed >= 50 && first.processed < 300, "{first:?}");
    assert_eq!(
        first.acked, first.processed,
        "what committed was acknowledged"
    );

    // A second run takes the rest; then, idle in a 5 s blocking read, it
    // still stops at once.
    let stop = CancellationToken::new();
    let second = worker(&stop);
    wait_for(
        "every order processed",
        Duration::from_secs(60),
        || async move { processed_count(db).await == 300 },
    )
    .await;
    wait_for(
        "an empty pending list",
        Duration::from_secs(10),
        || async move { pending(stream).await == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // now blocked in XREADGROUP
    let cancelled = Instant::now();
    stop.cancel();
    let second = second.await.unwrap().unwrap();
    assert!(
        cancelled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        cancelled.elapsed()
    );

    assert_eq!(
        add(&first, &second),
        (300, 300, 0, 0),
        "{first:?} {second:?}"
    );
    for (id, (status, hits)) in orders(&t.db).await {
        assert_eq!((status.as_str(), hits), ("processed", 1), "order {id}");
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

on_every_backend!(cancelling_stops_promptly_and_a_second_run_drains_the_rest,);
