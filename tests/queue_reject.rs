//! `Error::reject`: a handler that refuses its message for good sends the
//! entry to its group's dead letters at once — on its first delivery, with
//! no retry in place and no wait for `claim_idle` — while the rest of the
//! stream flows. On every SQL backend, alone and in shared transactions,
//! and for a plain handler.

#![allow(clippy::manual_assert)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::{CancellationToken, Handler, PlainHandler, Stream, Summary, Worker};

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

#[derive(Debug, Clone, PartialEq, Versioned)]
#[safesync(table = "reject_orders")]
struct Order {
    #[safesync(key)]
    id: i64,
    /// How many times the handler's effect was applied.
    hits: i64,
    #[safesync(version)]
    version: i64,
}

/// The order the handlers reject.
const REJECTED: i64 = 3;
const ORDERS: i64 = 8;
/// Far longer than the test waits: a rejection must not wait for a claim.
const CLAIM_IDLE: Duration = Duration::from_secs(30);

/// Counts its calls by order; writes its effect, then rejects
/// [`REJECTED`] (the write must roll back).
struct Bill {
    stream: &'static str,
    calls: Arc<Mutex<HashMap<i64, u64>>>,
}

impl Handler for Bill {
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
            *self.calls.lock().unwrap().entry(msg.order_id).or_insert(0) += 1;
            let mut order = Order::find(tx, &msg.order_id)
                .await?
                .ok_or_else(Error::not_found)?;
            order.hits += 1;
            order.update(tx).await?;
            if msg.order_id == REJECTED {
                return Err(Error::reject(format!(
                    "order {} is not billable",
                    msg.order_id
                )));
            }
            Ok(())
        })
    }
}

async fn send(stream: &'static str) {
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    let redis = redis_client();
    for order_id in 1..=ORDERS {
        orders
            .send(&redis, &OrderPlaced { order_id })
            .await
            .unwrap();
    }
}

/// Waits until the group has a dead letter and nothing pending; panics
/// after `limit`.
async fn wait_settled(stream: &str, limit: Duration) {
    let redis = redis_client();
    let start = Instant::now();
    loop {
        let dead = safesync::queue::dead_letters(&redis, stream, "billing")
            .await
            .unwrap()
            .len();
        // The group does not exist until the worker has started.
        let health = safesync::queue::health(&redis, stream, "billing").await;
        let state = health.as_ref().map(|h| (h.pending, h.lag));
        if dead == 1 && matches!(state, Ok((0, Some(0)))) {
            return;
        }
        if start.elapsed() > limit {
            panic!(
                "after {limit:?}: {dead} dead letters, (pending, lag) {state:?} (a rejection waits for a claim?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dead letter is the rejected order's, after one delivery, with the
/// handler's reason.
async fn assert_dead_letter(stream: &str) {
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    let payload = String::from_utf8(d.data().unwrap().to_vec()).unwrap();
    assert_eq!(payload, format!(r#"{{"order_id":{REJECTED}}}"#));
    assert_eq!(d.deliveries, 1, "dead-lettered on its first delivery");
    assert!(
        d.reason
            .contains("the handler rejected the entry on delivery 1")
            && d.reason.contains("order 3 is not billable"),
        "{}",
        d.reason
    );
}

async fn run_rejecting(backend: Backend, per_transaction: usize) {
    let t = TestDb::new(backend).await;
    t.exec(
        "CREATE TABLE reject_orders (id BIGINT PRIMARY KEY, hits BIGINT NOT NULL, \
         version BIGINT NOT NULL)",
    )
    .await;
    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=ORDERS {
        Order {
            id,
            hits: 0,
            version: 0,
        }
        .insert(&mut tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let stream = unique_stream("reject");
    send(stream).await;
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Bill {
                stream,
                calls: Arc::clone(&calls),
            })
            .concurrency(2)
            .messages_per_transaction(per_transaction)
            .claim_idle(CLAIM_IDLE)
            .max_deliveries(5)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    wait_settled(stream, Duration::from_secs(10)).await;
    stop.cancel();
    let s: Summary = worker.await.unwrap().unwrap();

    assert_dead_letter(stream).await;
    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=ORDERS {
        let o = Order::find(&mut tx, &id).await.unwrap().unwrap();
        let want = i64::from(id != REJECTED);
        assert_eq!(o.hits, want, "order {id}: the rejection rolled back");
    }
    tx.commit().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    // Alone: one run. In a shared transaction: the group's run, then its
    // own in the fall-back to each entry alone.
    let runs = if per_transaction == 1 { 1 } else { 2 };
    assert!(
        calls[&REJECTED] <= runs,
        "the rejected order ran {} times: retried",
        calls[&REJECTED]
    );
    assert_eq!(
        (s.dead_lettered, s.failed, s.retried, s.processed),
        (1, 1, 0, 7),
        "{s:?}"
    );
    t.cleanup().await;
}

async fn a_rejected_entry_is_dead_lettered_at_once(backend: Backend) {
    run_rejecting(backend, 1).await;
}

async fn a_rejection_in_a_shared_transaction_is_dead_lettered_at_once(backend: Backend) {
    run_rejecting(backend, 4).await;
}

on_every_backend!(
    a_rejected_entry_is_dead_lettered_at_once,
    a_rejection_in_a_shared_transaction_is_dead_lettered_at_once,
);

/// A plain handler rejecting [`REJECTED`].
struct Notify {
    stream: &'static str,
}

impl PlainHandler for Notify {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle(&self, msg: OrderPlaced) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if msg.order_id == REJECTED {
                return Err(Error::reject("order 3 is not billable"));
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_handler_s_rejection_is_dead_lettered_at_once() {
    let t = TestDb::new(Backend::Sqlite).await;
    let stream = unique_stream("reject-plain");
    send(stream).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Notify { stream })
            .claim_idle(CLAIM_IDLE)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    wait_settled(stream, Duration::from_secs(10)).await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_dead_letter(stream).await;
    assert_eq!((s.dead_lettered, s.failed, s.processed), (1, 1, 7), "{s:?}");
}
