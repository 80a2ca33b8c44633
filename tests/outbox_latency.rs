//! Figures, not checks (`#[ignore]`d; run them by hand): what the outbox
//! costs a producer's transaction, and how long a committed message takes
//! to reach its stream with the relay's poll interval.
//!
//! ```sh
//! cargo test --all-features --test outbox_latency -- --ignored --nocapture --test-threads 1
//! ```

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Backend, TestDb};
use safesync::redis;
use safesync::{CancellationToken, Relay, Stream};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stamped {
    /// Microseconds since the epoch at the producer's commit.
    committed_us: i64,
}

fn now_us() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

fn client() -> redis::Client {
    let url =
        std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    safesync::queue::client(&url).unwrap()
}

/// The `pct`th percentile of `sorted`, in milliseconds.
fn percentile_ms(sorted: &[i64], pct: usize) -> String {
    let us = sorted[(sorted.len() - 1) * pct / 100];
    format!("{}.{} ms", us / 1000, (us % 1000) / 100)
}

async fn measure(backend: Backend) {
    const TXS: usize = 500;
    const MESSAGES: usize = 200;
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE events (id BIGINT PRIMARY KEY)").await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    let stream: Stream<Stamped> =
        Stream::new(Box::leak(common::unique("ob_latency").into_boxed_str()));

    // Producer transactions per second, without and with `send_in`, twice
    // each, alternating (the first round also warms the pool up).
    for (round, with_outbox) in [false, true, false, true].into_iter().enumerate() {
        let start = Instant::now();
        for i in 0..TXS {
            let mut tx = t.db.begin().await.unwrap();
            let id = i64::try_from(i + round * 1_000_000).unwrap();
            tx.execute_with("INSERT INTO events (id) VALUES (?)", (id,))
                .await
                .unwrap();
            if with_outbox {
                stream
                    .send_in(&mut tx, &Stamped { committed_us: 0 })
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
        let rate = TXS as u128 * 1000 / start.elapsed().as_millis().max(1);
        println!("{backend:?}: producer transactions/s with_outbox={with_outbox}: {rate}");
    }
    t.db.execute("DELETE FROM safesync_queue_outbox")
        .await
        .unwrap();

    // Commit → entry on the stream, with the relay polling every `poll`.
    for poll in [Duration::from_millis(100), Duration::from_millis(10)] {
        let stop = CancellationToken::new();
        let relay = tokio::spawn(
            Relay::new(t.db.clone(), client())
                .poll_interval(poll)
                .run(stop.clone()),
        );
        let mut reader = client().get_multiplexed_async_connection().await.unwrap();
        let mut last_id = "$".to_owned();
        let mut latencies = Vec::with_capacity(MESSAGES);
        for _ in 0..MESSAGES {
            let mut tx = t.db.begin().await.unwrap();
            stream
                .send_in(&mut tx, &Stamped { committed_us: 0 })
                .await
                .unwrap();
            // The stamp is taken just before the commit (the payload is
            // written first): the figure includes the commit itself.
            let committed_us = now_us();
            tx.execute_with(
                "UPDATE safesync_queue_outbox SET payload = ? WHERE payload = ?",
                (
                    serde_json::to_string(&Stamped { committed_us }).unwrap(),
                    serde_json::to_string(&Stamped { committed_us: 0 }).unwrap(),
                ),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            let reply: redis::streams::StreamReadReply = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(stream.name())
                .arg(&last_id)
                .query_async(&mut reader)
                .await
                .unwrap();
            let seen_us = now_us();
            let entry = &reply.keys[0].ids[0];
            last_id.clone_from(&entry.id);
            let data: String = redis::from_redis_value(&entry.map["data"]).unwrap();
            let msg: Stamped = serde_json::from_str(&data).unwrap();
            latencies.push(seen_us - msg.committed_us);
            // Spread the commits over the poll cycle.
            tokio::time::sleep(Duration::from_millis(fastrand_ms())).await;
        }
        stop.cancel();
        relay.await.unwrap().unwrap();
        latencies.sort_unstable();
        println!(
            "{backend:?}: commit → stream, poll {poll:?}: p50 {}, p99 {} ({MESSAGES} messages)",
            percentile_ms(&latencies, 50),
            percentile_ms(&latencies, 99)
        );
    }
    t.cleanup().await;
}

/// 0-19 ms, from the clock (no rng dependency).
fn fastrand_ms() -> u64 {
    u64::try_from(now_us() % 20).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run by hand"]
async fn outbox_figures_postgres() {
    measure(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run by hand"]
async fn outbox_figures_mysql() {
    measure(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run by hand"]
async fn outbox_figures_sqlite() {
    measure(Backend::Sqlite).await;
}
