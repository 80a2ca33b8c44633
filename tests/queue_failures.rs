//! Failures you can see: a handler that keeps failing on one entry leaves
//! its last error in the run's `Summary` and in `health()` (read from
//! Redis), and `Worker::on_failure`'s hook is called once per failed
//! delivery with the right fields; a hook that panics does not stop the
//! worker. On every SQL backend.

#![allow(clippy::manual_assert)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::queue::FailedDelivery;
use safesync::redis;
use safesync::{CancellationToken, Handler, Stream, Summary, Worker};

fn redis_client() -> safesync::queue::Redis {
    let url =
        std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    safesync::queue::client(&url).unwrap()
}

/// A stream name no other test or run uses, leaked for `&'static str`.
fn unique_stream(prefix: &str) -> &'static str {
    Box::leak(common::unique(prefix).into_boxed_str())
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

/// The order the handler always fails on.
const FAILING: i64 = 3;
const ORDERS: i64 = 6;
const MAX_DELIVERIES: u64 = 3;
const GROUP: &str = "billing";

/// Records each order it handles in `failures_seen`; fails [`FAILING`]
/// after its write (which must roll back).
struct Bill {
    stream: &'static str,
}

impl Handler for Bill {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        GROUP
    }

    fn handle<'t>(
        &'t self,
        tx: &'t mut Tx<'_>,
        msg: OrderPlaced,
    ) -> BoxFuture<'t, Result<(), Error>> {
        Box::pin(async move {
            tx.execute(&format!(
                "INSERT INTO failures_seen (id) VALUES ({})",
                msg.order_id
            ))
            .await?;
            if msg.order_id == FAILING {
                return Err(Error::Config(format!(
                    "no tariff for order {}",
                    msg.order_id
                )));
            }
            Ok(())
        })
    }
}

/// Sends the orders; the id of [`FAILING`]'s entry.
async fn send(stream: &'static str) -> String {
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    let redis = redis_client();
    let mut failing = String::new();
    for order_id in 1..=ORDERS {
        let id = orders
            .send(&redis, &OrderPlaced { order_id })
            .await
            .unwrap();
        if order_id == FAILING {
            failing = id;
        }
    }
    failing
}

/// Waits until the group has a dead letter and nothing pending; panics
/// after `limit`.
async fn wait_settled(stream: &str, limit: Duration) {
    let redis = redis_client();
    let start = Instant::now();
    loop {
        let dead = safesync::queue::dead_letters(&redis, stream, GROUP)
            .await
            .unwrap()
            .len();
        let health = safesync::queue::health(&redis, stream, GROUP).await;
        let state = health.as_ref().map(|h| (h.pending, h.lag));
        if dead == 1 && matches!(state, Ok((0, Some(0)))) {
            return;
        }
        if start.elapsed() > limit {
            panic!("after {limit:?}: {dead} dead letters, (pending, lag) {state:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs [`Bill`] over the orders with `hook` installed until the failing
/// entry is dead-lettered; the summary and the failing entry's id.
async fn run_failing(
    t: &TestDb,
    stream: &'static str,
    hook: impl Fn(&FailedDelivery) + Send + Sync + 'static,
) -> (Summary, String) {
    t.exec("CREATE TABLE failures_seen (id BIGINT NOT NULL)")
        .await;
    let failing = send(stream).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Bill { stream })
            .concurrency(2)
            // Redelivered after 50 to 200 ms, never claimed meanwhile.
            .claim_idle(Duration::from_secs(10))
            .redelivery_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .max_deliveries(MAX_DELIVERIES)
            .block(Duration::from_millis(100))
            .on_failure(hook)
            .run(stop.clone()),
    );
    wait_settled(stream, Duration::from_secs(20)).await;
    stop.cancel();
    let summary = worker.await.unwrap().unwrap();
    (summary, failing)
}

/// The fields of a failure of the failing entry on `delivery`.
fn assert_failure(f: &FailedDelivery, stream: &str, id: &str, delivery: u64) {
    assert_eq!(
        (
            f.stream.as_str(),
            f.group.as_str(),
            f.id.as_str(),
            f.delivery
        ),
        (stream, GROUP, id, delivery),
        "{f:?}"
    );
    assert!(f.reason.contains("no tariff for order 3"), "{f:?}");
    assert_eq!(f.dead_lettered, delivery == MAX_DELIVERIES, "{f:?}");
    assert!(!f.consumer.is_empty(), "{f:?}");
}

async fn the_last_error_shows_in_the_summary_the_health_and_the_hook(backend: Backend) {
    let t = TestDb::new(backend).await;
    let stream = unique_stream("failures");
    let seen = Arc::new(Mutex::new(Vec::<FailedDelivery>::new()));
    let hook_seen = Arc::clone(&seen);
    let started = std::time::SystemTime::now();
    let (s, failing) = run_failing(&t, stream, move |f| {
        hook_seen.lock().unwrap().push(f.clone());
    })
    .await;

    // The hook: once per failed delivery, deliveries 1, 2, 3, the last one
    // dead-lettering the entry.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (f, delivery) in seen.iter().zip(1..) {
        assert_failure(f, stream, &failing, delivery);
        assert!(f.at >= started, "{f:?}");
    }
    let last = seen.last().unwrap();

    // The summary: that last failure, and the counts.
    assert_eq!(s.last_errors, vec![last.clone()], "{s:?}");
    assert_eq!(
        (s.failed, s.dead_lettered, s.processed),
        (3, 1, u64::try_from(ORDERS).unwrap() - 1),
        "{s:?}"
    );

    // The health, read back from Redis: the same, to the millisecond.
    let h = safesync::queue::health(&redis_client(), stream, GROUP)
        .await
        .unwrap();
    let stored = h.last_error.expect("health's last error");
    assert_failure(&stored, stream, &failing, MAX_DELIVERIES);
    assert_eq!(stored.consumer, last.consumer);
    let ms =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(ms(stored.at), ms(last.at));
    t.cleanup().await;
}

async fn a_panicking_hook_does_not_stop_the_worker(backend: Backend) {
    let t = TestDb::new(backend).await;
    let stream = unique_stream("failures-panic");
    let calls = Arc::new(Mutex::new(0_u32));
    let hook_calls = Arc::clone(&calls);
    let (s, failing) = run_failing(&t, stream, move |f| {
        *hook_calls.lock().unwrap() += 1;
        panic!("a bug in the hook, on {}", f.id);
    })
    .await;
    assert_eq!(*calls.lock().unwrap(), 3);
    assert_eq!(
        (s.failed, s.dead_lettered, s.processed),
        (3, 1, u64::try_from(ORDERS).unwrap() - 1),
        "{s:?}"
    );
    assert_eq!(s.last_errors.len(), 1, "{s:?}");
    assert_failure(&s.last_errors[0], stream, &failing, MAX_DELIVERIES);
    t.cleanup().await;
}

on_every_backend!(
    the_last_error_shows_in_the_summary_the_health_and_the_hook,
    a_panicking_hook_does_not_stop_the_worker,
);

/// A group that never failed has no last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_without_failures_has_no_last_error() {
    let stream = unique_stream("failures-none");
    let redis = redis_client();
    let mut c = common::queue::conn().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .unwrap();
    let h = safesync::queue::health(&redis, stream, GROUP)
        .await
        .unwrap();
    assert_eq!(h.last_error, None);
}
