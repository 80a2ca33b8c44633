//! Shared pieces of the queue tests (`tests/queue_*.rs`): the real Redis
//! (`SAFESYNC_REDIS_URL`, default `redis://127.0.0.1:6379`), unique
//! streams, an `orders` table, and handlers whose behaviour a test sets
//! (failures, panics, hangs) and whose calls it counts. A Redis that is not
//! answering fails the tests.

#![allow(clippy::manual_assert)] // reason: the test files' style: `if …{ panic!(…) }` with the details

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis::{self, aio::MultiplexedConnection};
use safesync::{Handler, SendOptions, Stream, Summary};

pub fn redis_url() -> String {
    std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn redis_client() -> safesync::queue::Redis {
    safesync::queue::client(&redis_url()).unwrap()
}

pub async fn conn() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {} is not answering: {e}", redis_url()))
}

/// A stream name no other test or run uses, leaked for `&'static str`.
pub fn unique_stream(prefix: &str) -> &'static str {
    Box::leak(super::unique(prefix).into_boxed_str())
}

pub async fn delete_stream(stream: &str) {
    let mut c = conn().await;
    let _: () = redis::cmd("DEL")
        .arg(stream)
        .arg(safesync::queue::dead_letter_key(stream, "billing"))
        .arg(safesync::queue::replay_key(stream, "billing"))
        .arg(format!("{stream}:dead"))
        .query_async(&mut c)
        .await
        .unwrap();
}

pub async fn xlen(stream: &str) -> usize {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut conn().await)
        .await
        .unwrap()
}

/// Deletes the stream and every key of its hash slot (`{stream}:*`: an
/// outbox relay's dedup keys, a worker's dead letters and replays).
pub async fn delete_keys(stream: &str) {
    let mut c = conn().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{stream}}}:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    keys.push(stream.to_owned());
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderPlaced {
    pub order_id: i64,
}

#[derive(Debug, Clone, PartialEq, Versioned, Locked)]
#[safesync(table = "orders")]
pub struct Order {
    #[safesync(key)]
    pub id: i64,
    pub status: String,
    /// How many times a handler's effect was applied: must end at 1.
    pub hits: i64,
    #[safesync(version)]
    pub version: i64,
}

pub const ORDERS: &str = "CREATE TABLE orders (id BIGINT PRIMARY KEY, status VARCHAR(32) NOT NULL, \
     hits BIGINT NOT NULL, version BIGINT NOT NULL)";

pub async fn setup_orders(backend: Backend, n: i64) -> TestDb {
    let t = TestDb::new(backend).await;
    t.exec(ORDERS).await;
    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=n {
        Order {
            id,
            status: "new".into(),
            hits: 0,
            version: 0,
        }
        .insert(&mut tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    t
}

pub async fn send_orders(stream: &'static str, ids: impl IntoIterator<Item = i64>) {
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    let mut c = conn().await;
    for order_id in ids {
        orders
            .send_on(&mut c, &OrderPlaced { order_id }, &SendOptions::default())
            .await
            .unwrap();
    }
}

/// Sends `ids` on `stream` through the outbox, one committed transaction
/// each.
pub async fn send_committed(db: &Db, stream: &Stream<OrderPlaced>, ids: impl Iterator<Item = i64>) {
    for order_id in ids {
        let mut tx = db.begin().await.unwrap();
        stream
            .send_in(&mut tx, &OrderPlaced { order_id })
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// `(status, hits)` of every order, by id.
pub async fn orders(db: &Db) -> HashMap<i64, (String, i64)> {
    let mut tx = db.begin().await.unwrap();
    let mut out = HashMap::new();
    let mut id = 1;
    while let Some(o) = Order::find(&mut tx, &id).await.unwrap() {
        out.insert(o.id, (o.status, o.hits));
        id += 1;
    }
    tx.commit().await.unwrap();
    out
}

/// What a test handler does to an order.
#[derive(Default)]
pub struct Behaviour {
    /// Order id → how many of its first deliveries fail with an error.
    pub fail_first: HashMap<i64, u64>,
    /// Orders whose handler always panics.
    pub panic_on: HashSet<i64>,
    /// Orders whose handler never returns (after writing, for a
    /// transactional handler).
    pub hang_on: HashSet<i64>,
    /// Pause inside the handler.
    pub delay: Option<Duration>,
    /// Orders whose plain handler ([`Plain`]) sleeps this long.
    pub slow_on: HashMap<i64, Duration>,
    /// Handler calls by order id.
    pub calls: std::sync::Mutex<HashMap<i64, u64>>,
    /// Handler calls in all.
    pub total: AtomicU64,
}

/// The hand-written form of
/// `#[queue_handler(stream = …, group = …)] async fn bill(tx, msg: OrderPlaced)`.
pub struct Bill {
    pub stream: &'static str,
    pub group: &'static str,
    pub behaviour: Arc<Behaviour>,
}

pub async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced, b: &Behaviour) -> Result<(), Error> {
    let call = {
        let mut calls = b.calls.lock().unwrap();
        let n = calls.entry(msg.order_id).or_insert(0);
        *n += 1;
        *n
    };
    b.total.fetch_add(1, Ordering::Relaxed);
    if let Some(d) = b.delay {
        tokio::time::sleep(d).await;
    }
    let mut order = Order::lock(tx, &msg.order_id)
        .await?
        .ok_or_else(Error::not_found)?;
    order.status = "processed".into();
    order.hits += 1;
    order.update(tx).await?;
    if b.hang_on.contains(&msg.order_id) {
        std::future::pending::<()>().await;
    }
    if b.panic_on.contains(&msg.order_id) {
        panic!("order {} makes the handler panic", msg.order_id);
    }
    if b.fail_first.get(&msg.order_id).is_some_and(|&k| call <= k) {
        return Err(Error::Config(format!(
            "order {} fails on call {call}",
            msg.order_id
        )));
    }
    Ok(())
}

impl Handler for Bill {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        self.group
    }

    fn handle<'t>(
        &'t self,
        tx: &'t mut Tx<'_>,
        msg: OrderPlaced,
    ) -> BoxFuture<'t, Result<(), Error>> {
        Box::pin(bill(tx, msg, &self.behaviour))
    }
}

pub fn handler(stream: &'static str, behaviour: &Arc<Behaviour>) -> Bill {
    Bill {
        stream,
        group: "billing",
        behaviour: Arc::clone(behaviour),
    }
}

/// Polls `done` every 50 ms until it is true; panics after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn processed_count(db: &Db) -> usize {
    orders(db)
        .await
        .values()
        .filter(|(s, _)| s == "processed")
        .count()
}

/// Dead letters of group `billing` on the stream.
pub async fn dead_letter_count(stream: &str) -> usize {
    dead_letters_of(stream).await.len()
}

/// The dead letters of group `billing` on the stream.
pub async fn dead_letters_of(stream: &str) -> Vec<safesync::queue::DeadLetter> {
    safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap()
}

/// `XGROUP CREATE <stream> billing 0`: the group, before any worker runs.
pub async fn create_group(stream: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("billing")
        .arg("0")
        .query_async(&mut conn().await)
        .await
        .unwrap();
}

/// `XREADGROUP GROUP billing <consumer> [COUNT n] STREAMS <stream> <from>`,
/// as another consumer would: the ids handed over.
pub async fn read_as(
    stream: &str,
    consumer: &str,
    count: Option<usize>,
    from: &str,
) -> Vec<String> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg("billing").arg(consumer);
    if let Some(n) = count {
        cmd.arg("COUNT").arg(n);
    }
    let read: redis::streams::StreamReadReply = cmd
        .arg("STREAMS")
        .arg(stream)
        .arg(from)
        .query_async(&mut conn().await)
        .await
        .unwrap();
    read.keys
        .iter()
        .flat_map(|k| k.ids.iter().map(|e| e.id.clone()))
        .collect()
}

pub async fn pending(stream: &str) -> u64 {
    safesync::queue::health(&redis_client(), stream, "billing")
        .await
        .unwrap()
        .pending
}

pub fn add(a: &Summary, b: &Summary) -> (u64, u64, u64, u64) {
    (
        a.processed + b.processed,
        a.acked + b.acked,
        a.duplicates + b.duplicates,
        a.failed + b.failed,
    )
}

// --- Handlers without a transaction (`PlainHandler`) -------------------------

/// A `#[queue_handler]` without `tx`; the tests run it on streams of their
/// own through [`Plain`], which counts what it was given.
#[allow(clippy::unused_async)] // reason: `#[queue_handler]` takes an `async fn`
#[safesync::queue_handler(stream = "safesync-test:plain", group = "plain")]
pub async fn forward(msg: OrderPlaced) -> Result<(), Error> {
    if msg.order_id < 0 {
        return Err(Error::Config(format!("order {} is refused", msg.order_id)));
    }
    Ok(())
}

/// The hand-written form of a plain handler, on a stream of the test's
/// own, delegating to `forward` (the macro's `PlainHandler` impl).
pub struct Plain {
    pub stream: &'static str,
    pub behaviour: Arc<Behaviour>,
}

impl safesync::PlainHandler for Plain {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle(&self, msg: OrderPlaced) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let b = &*self.behaviour;
            let call = {
                let mut calls = b.calls.lock().unwrap();
                let n = calls.entry(msg.order_id).or_insert(0);
                *n += 1;
                *n
            };
            b.total.fetch_add(1, Ordering::Relaxed);
            if b.hang_on.contains(&msg.order_id) {
                std::future::pending::<()>().await;
            }
            if let Some(&pause) = b.slow_on.get(&msg.order_id) {
                tokio::time::sleep(pause).await;
            }
            if b.panic_on.contains(&msg.order_id) {
                panic!("order {} makes the handler panic", msg.order_id);
            }
            if b.fail_first.get(&msg.order_id).is_some_and(|&k| call <= k) {
                return Err(Error::Config(format!(
                    "order {} fails on call {call}",
                    msg.order_id
                )));
            }
            safesync::PlainHandler::handle(&forward, msg).await
        })
    }
}

/// A [`Plain`] handler on `stream` with `behaviour`.
pub fn plain(stream: &'static str, behaviour: &Arc<Behaviour>) -> Plain {
    Plain {
        stream,
        behaviour: Arc::clone(behaviour),
    }
}

/// Rows in the ledger table.
pub async fn ledger_rows(db: &Db) -> i64 {
    db.fetch_one::<i64>("SELECT COUNT(*) FROM safesync_queue_ledger", ())
        .await
        .unwrap()
}
