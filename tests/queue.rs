//! The queue against a real Redis (`SAFESYNC_REDIS_URL`, default
//! `redis://127.0.0.1:6379`) and every SQL backend: exactly-once effects,
//! poison messages, retries and dead letters, lost acks, stopping, and
//! unreachable servers. A Redis that is not answering fails the tests.

#![allow(clippy::manual_assert, clippy::too_many_lines)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis::{self, aio::MultiplexedConnection};
use safesync::{CancellationToken, Handler, SendOptions, Stream, Summary, Worker};

fn redis_url() -> String {
    std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn redis_client() -> redis::Client {
    safesync::queue::client(&redis_url()).unwrap()
}

async fn conn() -> MultiplexedConnection {
    redis_client()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {} is not answering: {e}", redis_url()))
}

/// A stream name no other test or run uses, leaked for `&'static str`.
fn unique_stream(prefix: &str) -> &'static str {
    Box::leak(common::unique(prefix).into_boxed_str())
}

async fn delete_stream(stream: &str) {
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

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

#[derive(Debug, Clone, PartialEq, Versioned, Locked)]
#[safesync(table = "orders")]
struct Order {
    #[safesync(key)]
    id: i64,
    status: String,
    /// How many times a handler's effect was applied: must end at 1.
    hits: i64,
    #[safesync(version)]
    version: i64,
}

const ORDERS: &str = "CREATE TABLE orders (id BIGINT PRIMARY KEY, status VARCHAR(32) NOT NULL, \
     hits BIGINT NOT NULL, version BIGINT NOT NULL)";

async fn setup_orders(backend: Backend, n: i64) -> TestDb {
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

async fn send_orders(stream: &'static str, ids: impl IntoIterator<Item = i64>) {
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    let mut c = conn().await;
    for order_id in ids {
        orders
            .send_on(&mut c, &OrderPlaced { order_id }, &SendOptions::default())
            .await
            .unwrap();
    }
}

/// `(status, hits)` of every order, by id.
async fn orders(db: &Db) -> HashMap<i64, (String, i64)> {
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
struct Behaviour {
    /// Order id → how many of its first deliveries fail with an error.
    fail_first: HashMap<i64, u64>,
    /// Orders whose handler always panics.
    panic_on: HashSet<i64>,
    /// Orders whose handler never returns (after writing, for a
    /// transactional handler).
    hang_on: HashSet<i64>,
    /// Pause inside the handler.
    delay: Option<Duration>,
    /// Handler calls by order id.
    calls: std::sync::Mutex<HashMap<i64, u64>>,
    /// Handler calls in all.
    total: AtomicU64,
}

/// The hand-written form of
/// `#[queue_handler(stream = …, group = …)] async fn bill(tx, msg: OrderPlaced)`.
struct Bill {
    stream: &'static str,
    group: &'static str,
    behaviour: Arc<Behaviour>,
}

async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced, b: &Behaviour) -> Result<(), Error> {
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

fn handler(stream: &'static str, behaviour: &Arc<Behaviour>) -> Bill {
    Bill {
        stream,
        group: "billing",
        behaviour: Arc::clone(behaviour),
    }
}

/// Polls `done` every 50 ms until it is true; panics after `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut done: F)
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

async fn processed_count(db: &Db) -> usize {
    orders(db)
        .await
        .values()
        .filter(|(s, _)| s == "processed")
        .count()
}

/// Dead letters of group `billing` on the stream.
async fn dead_letter_count(stream: &str) -> usize {
    safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap()
        .len()
}

async fn pending(stream: &str) -> u64 {
    safesync::queue::health(&redis_client(), stream, "billing")
        .await
        .unwrap()
        .pending
}

fn add(a: &Summary, b: &Summary) -> (u64, u64, u64, u64) {
    (
        a.processed + b.processed,
        a.acked + b.acked,
        a.duplicates + b.duplicates,
        a.failed + b.failed,
    )
}

// --- 1. Many messages, several workers, every backend ----------------------

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
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_retries_conflicts_fail_the_delivery() {
    const M: i64 = 100;
    let t = setup_orders(Backend::Postgres, 3).await;
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
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_begin_that_fails_while_retrying_is_not_the_handlers_failure() {
    let t = setup_orders(Backend::Sqlite, 1).await;
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
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
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

/// A plain handler (no transaction) is bounded by the timeout too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_handler_past_its_timeout_is_dead_lettered() {
    let t = TestDb::new(Backend::Sqlite).await;
    let stream = unique_stream("plain-timeout");
    send_orders(stream, [1, 2, 3]).await;
    let behaviour = Arc::new(Behaviour {
        hang_on: HashSet::from([2]),
        ..Behaviour::default()
    });
    let registry = safesync::prometheus::Registry::new();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Plain {
                stream,
                behaviour: Arc::clone(&behaviour),
            })
            .concurrency(2)
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(600))
            .handler_timeout(Duration::from_millis(200))
            .max_deliveries(2)
            .metrics(safesync::queue::QueueMetrics::register(&registry).unwrap())
            .run(stop.clone()),
    );
    wait_for(
        "one dead letter and nothing pending",
        Duration::from_secs(15),
        || async move { dead_letter_count(stream).await == 1 && pending(stream).await == 0 },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.processed, s.failed, s.timed_out, s.dead_lettered),
        (2, 2, 2, 1),
        "{s:?}"
    );
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!(dead[0].data(), Some(&br#"{"order_id":2}"#[..]));
    assert_eq!(
        dead[0].reason,
        "the handler failed on delivery 2 of at most 2: timed out after 200ms (cancelled and rolled back)"
    );
    let text = safesync::prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    for (outcome, n) in [("ok", 2), ("timeout", 2)] {
        let line = format!(
            r#"safesync_queue_handler_latency_seconds_count{{group="billing",outcome="{outcome}",stream="{stream}"}} {n}"#
        );
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- 4. Commit without ack: the ledger makes the effect happen once --------

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

// --- 5. Several entries per transaction --------------------------------------

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

/// `prune_ledger` binds the age: rows older than it go, newer ones stay.
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

on_every_backend!(
    version_conflicts_are_retried_in_place_not_after_claim_idle,
    prune_ledger_deletes_only_rows_older_than_the_age_given,
    every_order_is_processed_exactly_once_by_concurrent_workers,
    a_commit_whose_ack_was_lost_takes_effect_once,
    shared_transactions_apply_each_entry_once_and_fall_back_on_failure,
    a_replayed_dead_letter_reaches_only_the_group_that_failed,
    a_payload_whose_decoding_panics_is_dead_lettered_not_lost,
);

// SQLite has one write lock: a hung transaction holds up every other (their
// deadlines run while they wait for it).
on_servers!(a_handler_past_its_timeout_is_cancelled_then_dead_lettered);

// --- 2. Poison messages ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_entries_are_dead_lettered_and_the_rest_processed() {
    let t = setup_orders(Backend::Sqlite, 3).await;
    let stream = unique_stream("poison");
    let mut c = conn().await;
    let orders_stream: Stream<OrderPlaced> = Stream::new(stream);
    let raw = c.clone();
    let send = |fields: Vec<(&'static str, Vec<u8>)>| {
        let mut c = raw.clone();
        async move {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("*");
            for (k, v) in fields {
                cmd.arg(k).arg(v);
            }
            cmd.query_async::<String>(&mut c).await.unwrap()
        }
    };
    let good = |id| OrderPlaced { order_id: id };
    orders_stream
        .send_on(&mut c, &good(1), &SendOptions::default())
        .await
        .unwrap();
    let malformed = send(vec![("data", b"{not json".to_vec())]).await;
    let wrong_type = send(vec![("data", br#"{"order_id":"seven"}"#.to_vec())]).await;
    orders_stream
        .send_on(&mut c, &good(2), &SendOptions::default())
        .await
        .unwrap();
    let missing_field = send(vec![("data", br#"{"id":3}"#.to_vec())]).await;
    let no_data = send(vec![("payload", br#"{"order_id":3}"#.to_vec())]).await;
    let not_utf8 = send(vec![("data", vec![0xff, 0xfe, b'{'])]).await;
    orders_stream
        .send_on(&mut c, &good(3), &SendOptions::default())
        .await
        .unwrap();

    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .concurrency(2)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for(
        "3 processed and 5 dead letters",
        Duration::from_secs(30),
        || async move {
            processed_count(db).await == 3
                && dead_letter_count(stream).await == 5
                && pending(stream).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.processed, s.dead_lettered, s.acked, s.failed),
        (3, 5, 8, 0),
        "{s:?}"
    );

    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
    let by_id: HashMap<&str, &safesync::queue::DeadLetter> =
        dead.iter().map(|d| (d.original_id.as_str(), d)).collect();
    let expect = [
        (
            &malformed,
            "its `data` field is not such JSON: key must be a string",
        ),
        (&wrong_type, "invalid type: string \"seven\", expected i64"),
        (&missing_field, "missing field `order_id`"),
        (&no_data, "it has no `data` field (its fields: `payload`)"),
        (&not_utf8, "its `data` field is not UTF-8"),
    ];
    for (id, needle) in expect {
        let d = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no dead letter for {id}"));
        assert!(
            d.reason.contains(needle),
            "{id}: {:?} lacks {needle:?}",
            d.reason
        );
        assert!(
            d.reason
                .starts_with(&format!("cannot decode entry {id} of `{stream}` as `")),
            "{:?}",
            d.reason
        );
        assert_eq!((d.group.as_str(), d.deliveries), ("billing", 1));
    }
    assert_eq!(
        by_id[not_utf8.as_str()].data(),
        Some(&[0xff, 0xfe, b'{'][..]),
        "original bytes kept"
    );
    assert_eq!(
        by_id[no_data.as_str()].fields,
        vec![("payload".to_owned(), br#"{"order_id":3}"#.to_vec())]
    );

    // Replay puts the original fields, and the original id, on the group's
    // replay stream (never on the stream) and removes the dead letter; an
    // unknown id, or another group's, is NotFound.
    let stream_length = |c: &mut MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            redis::cmd("XLEN")
                .arg(stream)
                .query_async::<u64>(&mut c)
                .await
                .unwrap()
        }
    };
    let before = stream_length(&mut c).await;
    let replayed = safesync::queue::replay_dead_letter(
        &redis_client(),
        stream,
        "billing",
        &by_id[wrong_type.as_str()].id,
    )
    .await
    .unwrap();
    let back: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(safesync::queue::replay_key(stream, "billing"))
        .arg(&replayed)
        .arg(&replayed)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(back.ids.len(), 1);
    assert_eq!(back.ids[0].map.len(), 2, "the original fields and id");
    assert_eq!(
        back.ids[0].get::<String>("data").as_deref(),
        Some(r#"{"order_id":"seven"}"#)
    );
    assert_eq!(
        back.ids[0].get::<String>("safesync_replay_of").as_deref(),
        Some(wrong_type.as_str())
    );
    assert_eq!(
        stream_length(&mut c).await,
        before,
        "nothing added to the stream"
    );
    assert_eq!(dead_letter_count(stream).await, 4);
    let err = safesync::queue::replay_dead_letter(&redis_client(), stream, "billing", "1-1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let other = &by_id[malformed.as_str()].id;
    let err = safesync::queue::replay_dead_letter(&redis_client(), stream, "mailer", other)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- 3. Handler failures: retried after claim_idle, then dead letters ------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_handler_is_retried_after_claim_idle_then_dead_lettered() {
    let t = setup_orders(Backend::Sqlite, 3).await;
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
            .claim_idle(Duration::from_millis(500))
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

    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_over_the_delivery_limit_is_dead_lettered_when_claimed() {
    let t = setup_orders(Backend::Sqlite, 1).await;
    let stream = unique_stream("overlimit");
    send_orders(stream, [1]).await;
    // A consumer that crashed on this entry three times.
    let mut c = conn().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("billing")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    for from in [">", "0", "0"] {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("billing")
            .arg("crashed")
            .arg("STREAMS")
            .arg(stream)
            .arg(from)
            .query_async(&mut c)
            .await
            .unwrap();
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
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!(dead[0].deliveries, 4);
    assert_eq!(
        dead[0].reason,
        "delivered 4 times, more than max_deliveries 3; last error: not seen by this worker"
    );
    assert_eq!(pending(stream).await, 0);
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- 5. Stop: prompt, nothing lost ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_stops_promptly_and_a_second_run_drains_the_rest() {
    const M: i64 = 300;
    let t = setup_orders(Backend::Sqlite, M).await;
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

// --- 6. Unreachable Redis ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_clear_error_in_bounded_time() {
    let err = safesync::queue::client("http://user:secret@nowhere").unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cannot use Redis URL `http://user:***@nowhere`"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");

    // Nothing listens on the port: refused at once.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = safesync::queue::client(&format!("redis://127.0.0.1:{refused}")).unwrap();
    let started = Instant::now();
    let err = Stream::<OrderPlaced>::new("nowhere")
        .send(&client, &OrderPlaced { order_id: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("redis connect to 127.0.0.1:{refused} failed: ")),
        "{err}"
    );
    let t = TestDb::new(Backend::Sqlite).await;
    let err = Worker::new(t.db.clone(), client.clone())
        .handle(handler("nowhere", &Arc::new(Behaviour::default())))
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("connect to 127.0.0.1:{refused}")),
        "{err}"
    );
    let err = safesync::queue::health(&client, "nowhere", "billing")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A server that accepts connections and never answers: the connect
    // timeout (5 s) ends the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let client = safesync::queue::client(&format!("redis://127.0.0.1:{port}")).unwrap();
    let started = Instant::now();
    let err = Stream::<OrderPlaced>::new("nowhere")
        .send(&client, &OrderPlaced { order_id: 1 })
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("connect to 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    accept.abort();

    // A worker without handlers is a configuration error, before any I/O.
    let err = Worker::new(t.db.clone(), client)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs at least one handler"),
        "{err}"
    );
    t.cleanup().await;
}

// --- Ledger and group housekeeping -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_group_is_recreated_and_the_ledger_skips_what_was_done() {
    let t = setup_orders(Backend::Sqlite, 6).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_entries_that_were_trimmed_are_acknowledged_and_counted() {
    let t = setup_orders(Backend::Sqlite, 4).await;
    let stream = unique_stream("trimmed");
    send_orders(stream, 1..=4).await;
    let mut c = conn().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("billing")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    // Two entries pending on a crashed consumer, two on the worker's own
    // name (from an earlier run); then all four are deleted.
    for consumer in ["crashed", "me"] {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("billing")
            .arg(consumer)
            .arg("COUNT")
            .arg(2)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_are_reopened_and_nothing_is_lost() {
    let t = setup_orders(Backend::Sqlite, 20).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

// --- Handlers without a transaction (`PlainHandler`) -------------------------

/// A `#[queue_handler]` without `tx`; the tests run it on streams of their
/// own through [`Plain`], which counts what it was given.
#[allow(clippy::unused_async)] // reason: `#[queue_handler]` takes an `async fn`
#[safesync::queue_handler(stream = "safesync-test:plain", group = "plain")]
async fn forward(msg: OrderPlaced) -> Result<(), Error> {
    if msg.order_id < 0 {
        return Err(Error::Config(format!("order {} is refused", msg.order_id)));
    }
    Ok(())
}

/// The hand-written form of a plain handler, on a stream of the test's
/// own, delegating to `forward` (the macro's `PlainHandler` impl).
struct Plain {
    stream: &'static str,
    behaviour: Arc<Behaviour>,
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

/// Rows in the ledger table.
async fn ledger_rows(db: &Db) -> i64 {
    let mut tx = db.begin().await.unwrap();
    let n: i64 = safesync::sqlx::query_scalar("SELECT COUNT(*) FROM safesync_queue_ledger")
        .fetch_one(tx.as_sqlite().unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_handler_consumes_every_message_once_without_a_transaction() {
    const M: i64 = 300;
    let t = TestDb::new(Backend::Sqlite).await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    let stream = unique_stream("plain");
    send_orders(stream, 1..=M).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Plain {
                stream,
                behaviour: Arc::clone(&behaviour),
            })
            .concurrency(4)
            .batch(16)
            // Entries read ahead are shared out among the four slots.
            .read_ahead(12)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let b = &behaviour;
    wait_for(
        "every message handled, nothing pending",
        Duration::from_secs(60),
        || async move {
            b.total.load(Ordering::Relaxed) >= u64::try_from(M).unwrap()
                && pending(stream).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();

    let calls = behaviour.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), usize::try_from(M).unwrap());
    for id in 1..=M {
        assert_eq!(calls.get(&id), Some(&1), "order {id}");
    }
    assert_eq!(
        (
            s.read,
            s.processed,
            s.acked,
            s.failed,
            s.duplicates,
            s.dead_lettered
        ),
        (300, 300, 300, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        ledger_rows(&t.db).await,
        0,
        "no ledger row for a plain handler"
    );
    let h = safesync::queue::health(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert_eq!(
        (h.length, h.pending, h.dead_letters, h.lag),
        (300, 0, 0, Some(0))
    );
    // The typed stream of the macro's handler is the payload's.
    assert_eq!(forward::stream().name(), "safesync-test:plain");
    delete_stream(stream).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_plain_handler_is_retried_then_dead_lettered() {
    let t = TestDb::new(Backend::Sqlite).await;
    let stream = unique_stream("plain-retry");
    // Order -4 is refused by `forward` itself, on every delivery.
    send_orders(stream, [1, 2, 3, -4]).await;
    let behaviour = Arc::new(Behaviour {
        fail_first: HashMap::from([(1, 2)]),
        panic_on: HashSet::from([2]),
        ..Behaviour::default()
    });
    let started = Instant::now();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Plain {
                stream,
                behaviour: Arc::clone(&behaviour),
            })
            .concurrency(2)
            .block(Duration::from_millis(100))
            .claim_idle(Duration::from_millis(500))
            .redelivery_backoff(Duration::from_millis(200), Duration::from_millis(400))
            .max_deliveries(3)
            .run(stop.clone()),
    );
    wait_for(
        "two dead letters and nothing pending",
        Duration::from_secs(30),
        || async move { dead_letter_count(stream).await == 2 && pending(stream).await == 0 },
    )
    .await;
    let elapsed = started.elapsed();
    stop.cancel();
    let s = worker.await.unwrap().unwrap();

    // Order 1 failed twice and went through on its third delivery; order 2
    // panicked and order -4 was refused on all three; order 3 went through
    // at once.
    let calls = behaviour.calls.lock().unwrap().clone();
    assert_eq!(calls, HashMap::from([(1, 3), (2, 3), (3, 1), (-4, 3)]));
    assert!(
        elapsed >= Duration::from_millis(300),
        "two back-offs, of 100-200 ms then 200-400 ms: {elapsed:?}"
    );
    assert_eq!(
        (s.processed, s.failed, s.dead_lettered, s.acked),
        (2, 8, 2, 4),
        "{s:?}"
    );
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
    let reason = |data: &[u8]| {
        dead.iter().find(|d| d.data() == Some(data)).map_or_else(
            || panic!("no dead letter for {}", String::from_utf8_lossy(data)),
            |d| (d.deliveries, d.reason.clone()),
        )
    };
    let (deliveries, why) = reason(br#"{"order_id":2}"#);
    assert_eq!(deliveries, 3);
    assert!(
        why.starts_with("the handler failed on delivery 3 of at most 3: the handler panicked: order 2 makes the handler panic"),
        "{why}"
    );
    let (deliveries, why) = reason(br#"{"order_id":-4}"#);
    assert_eq!(deliveries, 3);
    assert!(why.ends_with("order -4 is refused"), "{why}");
    delete_stream(stream).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_handler_dead_letters_undecodable_entries_at_once() {
    let t = TestDb::new(Backend::Sqlite).await;
    let stream = unique_stream("plain-poison");
    let mut c = conn().await;
    send_orders(stream, [1]).await;
    let malformed: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg("{not json")
        .query_async(&mut c)
        .await
        .unwrap();
    let no_data: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("body")
        .arg(r#"{"order_id":2}"#)
        .query_async(&mut c)
        .await
        .unwrap();
    send_orders(stream, [3]).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(Plain {
                stream,
                behaviour: Arc::clone(&behaviour),
            })
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let seen = &behaviour;
    wait_for(
        "2 handled, 2 dead letters, nothing pending",
        Duration::from_secs(20),
        || async move {
            seen.total.load(Ordering::Relaxed) == 2
                && dead_letter_count(stream).await == 2
                && pending(stream).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.processed, s.dead_lettered, s.acked, s.failed),
        (2, 2, 4, 0),
        "{s:?}"
    );
    assert_eq!(
        behaviour.calls.lock().unwrap().clone(),
        HashMap::from([(1, 1), (3, 1)])
    );
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
    for (id, needle) in [
        (
            &malformed,
            "its `data` field is not such JSON: key must be a string",
        ),
        (&no_data, "it has no `data` field (its fields: `body`)"),
    ] {
        let d = dead
            .iter()
            .find(|d| &d.original_id == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}"));
        assert_eq!(d.deliveries, 1, "dead-lettered on the first delivery");
        assert!(
            d.reason
                .starts_with(&format!("cannot decode entry {id} of `{stream}` as `")),
            "{:?}",
            d.reason
        );
        assert!(d.reason.contains(needle), "{:?} lacks {needle:?}", d.reason);
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- Dead letters per group, replayed to that group alone --------------------

/// One stream, two groups; order 1 fails once in `billing` only and is
/// dead-lettered there. Replayed, it reaches `billing` alone: `billing`
/// applies it once, `shipping` (which had applied it) never sees it again,
/// and nothing is added to the stream.
async fn a_replayed_dead_letter_reaches_only_the_group_that_failed(backend: Backend) {
    let t = setup_orders(backend, 2).await;
    let stream = unique_stream("replay");
    send_orders(stream, 1..=2).await;
    let billing = Arc::new(Behaviour {
        fail_first: HashMap::from([(1, 1)]),
        ..Behaviour::default()
    });
    let shipping = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &billing))
            .handle(Bill {
                stream,
                group: "shipping",
                behaviour: Arc::clone(&shipping),
            })
            .concurrency(2)
            .max_deliveries(1)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let redis = redis_client();
    let dead_of = |group: &'static str| {
        let redis = redis.clone();
        async move {
            safesync::queue::dead_letters(&redis, stream, group)
                .await
                .unwrap()
        }
    };
    let db = &t.db;
    wait_for(
        "order 1 dead in billing only",
        Duration::from_secs(30),
        || async {
            dead_of("billing").await.len() == 1
                && orders(db).await.get(&2).is_some_and(|o| o.1 == 2)
                && orders(db).await.get(&1).is_some_and(|o| o.1 == 1)
        },
    )
    .await;
    assert!(dead_of("shipping").await.is_empty());
    let dead = dead_of("billing").await.remove(0);
    let h = safesync::queue::health(&redis, stream, "billing")
        .await
        .unwrap();
    assert_eq!((h.dead_letters, h.legacy_dead_letters), (1, 0));

    safesync::queue::replay_dead_letter(&redis, stream, "billing", &dead.id)
        .await
        .unwrap();
    wait_for(
        "order 1 applied by billing",
        Duration::from_secs(30),
        || async {
            orders(db).await.get(&1).is_some_and(|o| o.1 >= 2) && pending(stream).await == 0
        },
    )
    .await;
    // Time for a wrong second delivery to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        orders(db).await[&1].1,
        2,
        "one effect per group: shipping's first, billing's replay"
    );
    assert_eq!(
        shipping.calls.lock().unwrap()[&1],
        1,
        "shipping saw it once"
    );
    assert_eq!(
        billing.calls.lock().unwrap()[&1],
        2,
        "billing: failed, then replayed"
    );
    assert_eq!((s.processed, s.dead_lettered, s.failed), (4, 1, 1), "{s:?}");
    assert!(dead_of("billing").await.is_empty());
    let mut c = conn().await;
    let length: u64 = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(length, 2, "the replay never went on the stream");
    let _: () = redis::cmd("DEL")
        .arg(safesync::queue::dead_letter_key(stream, "shipping"))
        .arg(safesync::queue::replay_key(stream, "shipping"))
        .query_async(&mut c)
        .await
        .unwrap();
    delete_stream(stream).await;
    t.cleanup().await;
}

/// Dead letters written by earlier versions to the shared `<stream>:dead`
/// are listed for the group that gave up on them, and replayed to it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_dead_letters_are_listed_and_replayed_per_group() {
    let stream = unique_stream("legacy");
    let legacy = format!("{stream}:dead");
    let mut c = conn().await;
    let add = |group: &str, original: &str| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&legacy)
            .arg("*")
            .arg("data")
            .arg(r#"{"order_id":1}"#);
        for (k, v) in [
            ("dead_original_id", original),
            ("dead_group", group),
            ("dead_consumer", "old"),
            ("dead_deliveries", "5"),
            ("dead_reason", "boom"),
        ] {
            cmd.arg(k).arg(v);
        }
        cmd
    };
    let billing: String = add("billing", "1-1").query_async(&mut c).await.unwrap();
    let mailer: String = add("mailer", "1-2").query_async(&mut c).await.unwrap();
    let redis = redis_client();
    let listed = safesync::queue::dead_letters(&redis, stream, "billing")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].original_id.as_str()),
        (billing.as_str(), "1-1")
    );
    let err = safesync::queue::replay_dead_letter(&redis, stream, "billing", &mailer)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "another group's: {err:?}"
    );
    safesync::queue::replay_dead_letter(&redis, stream, "billing", &billing)
        .await
        .unwrap();
    let replayed: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(safesync::queue::replay_key(stream, "billing"))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(replayed.ids.len(), 1);
    assert_eq!(
        replayed.ids[0]
            .get::<String>("safesync_replay_of")
            .as_deref(),
        Some("1-1")
    );
    let left = safesync::queue::dead_letters(&redis, stream, "mailer")
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the other group's stays");
    assert!(
        safesync::queue::dead_letters(&redis, stream, "billing")
            .await
            .unwrap()
            .is_empty()
    );
    let _: () = redis::cmd("DEL")
        .arg(&legacy)
        .arg(safesync::queue::replay_key(stream, "billing"))
        .query_async(&mut c)
        .await
        .unwrap();
}

// --- A deleted group does not replay history --------------------------------

/// A plain handler has no ledger: a group created again from `0` would
/// run the whole stream again. It starts after the last delivered entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_group_is_recreated_after_the_last_delivered_entry() {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    let stream = unique_stream("nogroup-plain");
    send_orders(stream, 1..=3).await;
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db, redis_client())
            .handle(Plain {
                stream,
                behaviour: Arc::clone(&behaviour),
            })
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let total = &behaviour.total;
    wait_for("3 handled", Duration::from_secs(20), || async move {
        total.load(Ordering::Relaxed) == 3
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
    wait_for("6 handled", Duration::from_secs(20), || async move {
        total.load(Ordering::Relaxed) >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        behaviour.calls.lock().unwrap().clone(),
        (1..=6).map(|id| (id, 1)).collect::<HashMap<_, _>>(),
        "nothing before the last delivered entry ran twice"
    );
    assert_eq!(s.processed, 6, "{s:?}");
    delete_stream(stream).await;
}

// --- Bounded failure reports -------------------------------------------------

/// A 1 MB string where a number belongs: serde's error quotes it, the
/// dead letter's reason keeps at most 1 KiB of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_reason_is_capped_at_1_kib() {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    let stream = unique_stream("bigreason");
    let mut c = conn().await;
    let huge = format!(r#"{{"order_id":"{}"}}"#, "x".repeat(1 << 20));
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(&huge)
        .query_async(&mut c)
        .await
        .unwrap();
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db, redis_client())
            .handle(Plain {
                stream,
                behaviour: Arc::clone(&behaviour),
            })
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    wait_for("a dead letter", Duration::from_secs(20), || async move {
        dead_letter_count(stream).await == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap()
        .remove(0);
    assert!(dead.reason.len() <= 1024, "{} bytes", dead.reason.len());
    assert!(
        dead.reason.contains("invalid type: string \"xxx"),
        "{}",
        dead.reason
    );
    assert!(dead.reason.ends_with("bytes in all]"), "{}", dead.reason);
    assert_eq!(
        dead.data(),
        Some(huge.as_bytes()),
        "the payload itself is kept whole"
    );
    delete_stream(stream).await;
}

/// Two pending entries, the later one idle longer: health reports the
/// longest idle time, not the lowest id's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_the_longest_idle_pending_entry() {
    let stream = unique_stream("idle");
    send_orders(stream, 1..=2).await;
    let mut c = conn().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("billing")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("billing")
        .arg("c")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
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

// --- Settings that cannot panic ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_out_of_range_are_config_errors_naming_them() {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    let stream = unique_stream("config");
    let behaviour = Arc::new(Behaviour::default());
    let worker = || {
        Worker::new(db.clone(), redis_client()).handle(Plain {
            stream,
            behaviour: Arc::clone(&behaviour),
        })
    };
    let cases: [(Worker, &str); 7] = [
        (
            worker().handler_timeout(Duration::from_secs(60)),
            "`Worker::handler_timeout` is 60s; allowed: 1ms to below `Worker::claim_idle` (60s)",
        ),
        (
            Worker::new(db.clone(), redis_client())
                .handle(SlowPlain(stream))
                .claim_idle(Duration::from_secs(10)),
            "the timeout of the handler of",
        ),
        (worker().block(Duration::MAX), "`Worker::block` is"),
        (
            worker().concurrency(usize::MAX),
            "`Worker::concurrency` is 18446744073709551615; allowed: 1 to 100000",
        ),
        (
            worker()
                .batch(usize::MAX)
                .messages_per_transaction(usize::MAX),
            "`Worker::batch` is 18446744073709551615",
        ),
        (
            worker().batch(100_000).messages_per_transaction(10_000),
            "`Worker::batch` × `Worker::messages_per_transaction` is 100000 × 10000",
        ),
        (
            worker().claim_idle(Duration::MAX),
            "`Worker::claim_idle` is",
        ),
    ];
    for (w, needle) in cases {
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), w.run(CancellationToken::new()))
            .await
            .expect("returns at once")
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    delete_stream(stream).await;
}

/// A plain handler whose own timeout is 10 s.
struct SlowPlain(&'static str);

impl safesync::PlainHandler for SlowPlain {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.0
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle(&self, _msg: OrderPlaced) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(10))
    }
}

/// A payload type whose `Deserialize` panics on negative numbers.
#[derive(Debug, serde::Serialize)]
struct Touchy(i64);

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Touchy, D::Error> {
        let n = i64::deserialize(d)?;
        assert!(n >= 0, "a negative Touchy: {n}");
        Ok(Touchy(n))
    }
}

struct TouchyHandler {
    stream: &'static str,
    handled: Arc<AtomicU64>,
}

impl Handler for TouchyHandler {
    type Payload = Touchy;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle<'t>(&'t self, _tx: &'t mut Tx<'_>, _msg: Touchy) -> BoxFuture<'t, Result<(), Error>> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// A panic while decoding (in a message task, outside the handler) is
/// not a silently dead task with its entry stuck: the entry is
/// dead-lettered with the panic's message and the rest is handled.
async fn a_payload_whose_decoding_panics_is_dead_lettered_not_lost(backend: Backend) {
    let t = TestDb::new(backend).await;
    let stream = unique_stream("touchy");
    let mut c = conn().await;
    for n in ["5", "-1", "6"] {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("data")
            .arg(n)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let handled = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(TouchyHandler {
                stream,
                handled: Arc::clone(&handled),
            })
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    wait_for("a dead letter", Duration::from_secs(20), || async {
        dead_letter_count(stream).await == 1 && pending(stream).await == 0
    })
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!((s.processed, s.dead_lettered), (2, 1), "{s:?}");
    assert_eq!(handled.load(Ordering::Relaxed), 2);
    let dead = safesync::queue::dead_letters(&redis_client(), stream, "billing")
        .await
        .unwrap();
    assert!(
        dead[0].reason.contains("panicked: a negative Touchy: -1"),
        "{}",
        dead[0].reason
    );
    delete_stream(stream).await;
    t.cleanup().await;
}
