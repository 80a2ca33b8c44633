//! Shared pieces of the queue fault tests (`tests/queue_faults.rs`,
//! `tests/queue_redis_faults.rs`): 400 orders on a stream, a handler that
//! lingers inside its transaction so faults land while work is in flight,
//! and the progress of the orders' effects.

use std::time::{Duration, Instant};

use super::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis;
use safesync::{Handler, SendOptions, Stream};

pub const MESSAGES: i64 = 400;

pub fn redis_url() -> String {
    std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderPlaced {
    pub order_id: i64,
}

#[derive(Debug, Clone, Versioned, Locked)]
#[safesync(table = "orders")]
pub struct Order {
    #[safesync(key)]
    pub id: i64,
    /// How many times a handler's effect was applied: must end at 1.
    pub hits: i64,
    #[safesync(version)]
    pub version: i64,
}

/// Locks the order, counts the effect, then lingers inside the transaction
/// so that stops and kills land while work is in flight.
pub struct Bill {
    pub stream: &'static str,
    pub linger: Duration,
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
            let mut o = Order::lock(tx, &msg.order_id)
                .await?
                .ok_or_else(Error::not_found)?;
            o.hits += 1;
            o.update(tx).await?;
            tokio::time::sleep(self.linger).await;
            Ok(())
        })
    }
}

pub async fn setup(backend: Backend, stream: &str, redis_url: &str) -> TestDb {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE orders (id BIGINT PRIMARY KEY, hits BIGINT NOT NULL, version BIGINT NOT NULL)").await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=MESSAGES {
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
    let client = safesync::redis::Client::open(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let orders: Stream<OrderPlaced> = Stream::new(Box::leak(stream.to_owned().into_boxed_str()));
    for order_id in 1..=MESSAGES {
        orders
            .send_on(&mut c, &OrderPlaced { order_id }, &SendOptions::default())
            .await
            .unwrap();
    }
    t
}

/// (orders with at least one hit, orders with more than one hit)
/// Orders applied at least once, and more than once. Read outside a
/// transaction: on SQLite a `BEGIN IMMEDIATE` here would queue for the
/// write lock a busy worker keeps taking, and see progress only late.
pub async fn progress(db: &Db) -> (i64, i64) {
    let done = db
        .fetch_one::<i64>("SELECT COUNT(*) FROM orders WHERE hits >= 1", ())
        .await
        .unwrap();
    let twice = db
        .fetch_one::<i64>("SELECT COUNT(*) FROM orders WHERE hits > 1", ())
        .await
        .unwrap();
    (done, twice)
}

pub async fn wait_for_progress(db: &Db, at_least: i64, limit: Duration) {
    let start = Instant::now();
    while progress(db).await.0 < at_least {
        assert!(
            start.elapsed() < limit,
            "no progress to {at_least} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn pending(redis_url: &str, stream: &str) -> u64 {
    let client = safesync::redis::Client::open(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("billing")
        .query_async(&mut c)
        .await
        .unwrap();
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap(),
            other => panic!("unexpected XPENDING reply {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// `(id, consumer)` of every pending entry of the group.
pub async fn pending_entries(redis_url: &str, stream: &str) -> Vec<(String, String)> {
    let client = safesync::redis::Client::open(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg("billing")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query_async(&mut c)
        .await
        .unwrap();
    reply.ids.into_iter().map(|p| (p.id, p.consumer)).collect()
}

pub async fn delete_stream(redis_url: &str, stream: &str) {
    let client = safesync::redis::Client::open(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(stream)
        .arg(safesync::queue::dead_letter_key(stream, "billing"))
        .arg(safesync::queue::replay_key(stream, "billing"))
        .query_async(&mut c)
        .await
        .unwrap();
}
