//! The transactional outbox on every backend: `Stream::send_in` writes in
//! the caller's transaction, a `Relay` forwards what committed. A rolled
//! back transaction sends nothing; committed messages arrive once, in
//! order per stream; a relay process killed with SIGKILL between `XADD`
//! and deleting its rows leaves a resend that adds no second entry, so a
//! consumer's effect happens once; two relays at once send each message
//! once, in order. Relay processes are this test binary, re-run with
//! `SAFESYNC_OUTBOX_CHILD` set.

#![allow(clippy::manual_assert)]

mod common;

use std::time::{Duration, Instant};

use common::queue::{OrderPlaced, delete_keys, send_committed, xlen};
use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis::{self, aio::MultiplexedConnection};
use safesync::{CancellationToken, Handler, Relay, Stream, Worker};

const CHILD_ENV: &str = "SAFESYNC_OUTBOX_CHILD";
/// What a child relay prints once its first batch is in Redis.
const ADDED: &str = "OUTBOX-ADDED";

fn redis_url() -> String {
    std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn client() -> redis::Client {
    redis::Client::open(redis_url()).unwrap()
}

async fn conn() -> MultiplexedConnection {
    client().get_multiplexed_async_connection().await.unwrap()
}

#[derive(Debug, Clone, Versioned, Locked)]
#[safesync(table = "orders")]
struct Order {
    #[safesync(key)]
    id: i64,
    /// How many times a handler's effect was applied: must end at 1.
    hits: i64,
    #[safesync(version)]
    version: i64,
}

/// A stream name no other test or run uses, leaked for `&'static str`.
fn stream_name(prefix: &str) -> &'static str {
    Box::leak(common::unique(prefix).into_boxed_str())
}

/// Every entry of `stream`: (field names, the `order_id` of its `data`).
async fn entries(stream: &str) -> Vec<(Vec<String>, i64)> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn().await)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields: Vec<String> = e.map.keys().cloned().collect();
            let data: String = redis::from_redis_value(&e.map["data"]).unwrap();
            let msg: OrderPlaced = serde_json::from_str(&data).unwrap();
            (fields, msg.order_id)
        })
        .collect()
}

async fn outbox_rows(db: &Db) -> i64 {
    db.fetch_one("SELECT COUNT(*) FROM safesync_queue_outbox", ())
        .await
        .unwrap()
}

async fn rolled_back_transaction_sends_nothing(backend: Backend) {
    let t = TestDb::new(backend).await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    let orders: Stream<OrderPlaced> = Stream::new(stream_name("ob_rollback"));
    let relay = Relay::new(t.db.clone(), client());

    let mut tx = t.db.begin().await.unwrap();
    for order_id in 1..=3 {
        orders
            .send_in(&mut tx, &OrderPlaced { order_id })
            .await
            .unwrap();
    }
    tx.rollback().await.unwrap();
    // Dropped without commit is a rollback too.
    {
        let mut tx = t.db.begin().await.unwrap();
        orders
            .send_in(&mut tx, &OrderPlaced { order_id: 4 })
            .await
            .unwrap();
    }
    assert_eq!(relay.run_once().await.unwrap().sent, 0);
    assert_eq!(xlen(orders.name()).await, 0, "{backend:?}: nothing sent");

    // The same relay does send what commits.
    send_committed(&t.db, &orders, 5..=5).await;
    assert_eq!(relay.run_once().await.unwrap().sent, 1);
    let got = entries(orders.name()).await;
    assert_eq!(got, vec![(vec!["data".to_owned()], 5)], "{backend:?}");
    assert_eq!(outbox_rows(&t.db).await, 0);

    delete_keys(orders.name()).await;
    t.cleanup().await;
}

async fn committed_messages_arrive_once_in_order_per_stream(backend: Backend) {
    let t = TestDb::new(backend).await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    let a: Stream<OrderPlaced> = Stream::new(stream_name("ob_order_a"));
    let b: Stream<OrderPlaced> = Stream::new(stream_name("ob_order_b"));

    // Interleaved on two streams, several messages per transaction, and a
    // rolled-back transaction in the middle.
    for round in 0..10 {
        let mut tx = t.db.begin().await.unwrap();
        for i in 0..3 {
            let id = round * 3 + i;
            a.send_in(&mut tx, &OrderPlaced { order_id: id })
                .await
                .unwrap();
            b.send_in(
                &mut tx,
                &OrderPlaced {
                    order_id: 1000 + id,
                },
            )
            .await
            .unwrap();
        }
        if round == 4 {
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
        }
    }
    let relay = Relay::new(t.db.clone(), client()).batch(4);
    let summary = relay.run_once().await.unwrap();
    assert_eq!(summary.sent, 54, "{backend:?}: {summary:?}");
    assert_eq!(summary.resends_recognised, 0);

    let expected: Vec<i64> = (0..30).filter(|id| !(12..15).contains(id)).collect();
    let got_a = entries(a.name()).await;
    assert!(got_a.iter().all(|(fields, _)| fields == &["data"]));
    let got_a: Vec<i64> = got_a.into_iter().map(|(_, id)| id).collect();
    assert_eq!(got_a, expected, "{backend:?}: stream a");
    let got_b: Vec<i64> = entries(b.name())
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let expected_b: Vec<i64> = expected.iter().map(|id| 1000 + id).collect();
    assert_eq!(got_b, expected_b, "{backend:?}: stream b");
    assert_eq!(outbox_rows(&t.db).await, 0);

    // Nothing is sent twice.
    assert_eq!(relay.run_once().await.unwrap().sent, 0);
    assert_eq!(xlen(a.name()).await, 27);

    delete_keys(a.name()).await;
    delete_keys(b.name()).await;
    t.cleanup().await;
}

/// Counts the effect on the order, in the handler's transaction.
struct Bill {
    stream: &'static str,
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
            o.update(tx).await
        })
    }
}

async fn create_orders(t: &TestDb, n: i64) {
    t.exec("CREATE TABLE orders (id BIGINT PRIMARY KEY, hits BIGINT NOT NULL, version BIGINT NOT NULL)").await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=n {
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
}

/// Runs a worker on `stream` until every order was billed; returns the
/// hits per order.
async fn bill_everything(db: &Db, stream: &'static str, n: i64) -> Vec<i64> {
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db.clone(), client())
            .handle(Bill { stream })
            .block(Duration::from_millis(200))
            .run(stop.clone()),
    );
    let start = Instant::now();
    let hits = loop {
        let hits: Vec<i64> = db
            .fetch_all("SELECT hits FROM orders ORDER BY id", ())
            .await
            .unwrap();
        if hits.iter().all(|h| *h >= 1) || start.elapsed() > Duration::from_secs(30) {
            break hits;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Time for a duplicate to be processed, were there one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let after: Vec<i64> = db
        .fetch_all("SELECT hits FROM orders ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(after.len(), usize::try_from(n).unwrap());
    assert!(hits.iter().all(|h| *h >= 1), "not all billed: {hits:?}");
    after
}

/// The body of a relay process; a no-op unless started by a test below.
/// Its hook announces the first batch's entries and then hangs, holding
/// the batch's rows, until the parent kills it.
#[test]
fn outbox_relay_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (backend, namespace) = (Backend::from_name(parts[0]), parts[1]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = common::attach(backend, namespace).await;
        let hook: fn(&str) = |_stream| {
            use std::io::Write as _;
            println!("{ADDED}");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        };
        let relay = Relay::new(db, client()).batch(5).after_xadd_for_tests(hook);
        relay.run(CancellationToken::new()).await.unwrap();
    });
}

async fn relay_killed_between_xadd_and_delete_the_effect_happens_once(backend: Backend) {
    const N: i64 = 20;
    let t = TestDb::new(backend).await;
    let orders_key = stream_name("ob_kill");
    let orders: Stream<OrderPlaced> = Stream::new(orders_key);
    create_orders(&t, N).await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    send_committed(&t.db, &orders, 1..=N).await;

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "outbox_relay_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, format!("{}|{}", backend.name(), t.namespace()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let announced = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead as _;
            std::io::BufReader::new(stdout)
                .lines()
                .any(|line| line.unwrap().contains(ADDED))
        }),
    )
    .await;
    let killed = child.kill();
    let status = child.wait().unwrap();
    assert!(
        announced
            .expect("the child relay adds its first batch")
            .unwrap(),
        "the child relay exited before adding a batch"
    );
    killed.unwrap();
    assert!(!status.success(), "the child was killed");

    // The child added its batch but deleted nothing.
    assert_eq!(xlen(orders.name()).await, 5, "{backend:?}");
    assert_eq!(outbox_rows(&t.db).await, N);

    // A second relay finishes: the child's five rows are recognised. The
    // server may notice the killed child's connection a moment late and
    // hold its row locks until then (SKIP LOCKED passes over them), so
    // passes repeat, as a running relay's would, until the outbox is empty.
    let relay = Relay::new(t.db.clone(), client()).batch(5);
    let (mut sent, mut recognised) = (0, 0);
    let start = Instant::now();
    while outbox_rows(&t.db).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{backend:?}: the outbox still has rows after 30 s ({sent} sent)"
        );
        let pass = relay.run_once().await.unwrap();
        sent += pass.sent;
        recognised += pass.resends_recognised;
        if pass.sent == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(sent, 20, "{backend:?}: {sent} sent");
    assert_eq!(
        recognised, 5,
        "{backend:?}: {recognised} resends recognised"
    );
    let got: Vec<i64> = entries(orders.name())
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        got,
        (1..=N).collect::<Vec<_>>(),
        "{backend:?}: once, in order"
    );
    assert_eq!(outbox_rows(&t.db).await, 0);

    // The consumer applies each message once.
    let hits = bill_everything(&t.db, orders_key, N).await;
    assert!(hits.iter().all(|h| *h == 1), "{backend:?}: hits {hits:?}");

    delete_keys(orders.name()).await;
    t.cleanup().await;
}

async fn two_relays_at_once_send_each_message_once_in_order(backend: Backend) {
    const PER_STREAM: i64 = 150;
    let t = TestDb::new(backend).await;
    let a_key = stream_name("ob_two_a");
    let a: Stream<OrderPlaced> = Stream::new(a_key);
    let b: Stream<OrderPlaced> = Stream::new(stream_name("ob_two_b"));
    create_orders(&t, PER_STREAM).await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();

    let stop = CancellationToken::new();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let db = t.other_db().await;
        relays.push(tokio::spawn(
            Relay::new(db, client())
                .batch(3)
                .poll_interval(Duration::from_millis(5))
                .run(stop.clone()),
        ));
    }
    // Producers commit while both relays run.
    let pa = tokio::spawn({
        let (db, a) = (t.db.clone(), a.clone());
        async move { send_committed(&db, &a, 1..=PER_STREAM).await }
    });
    let pb = tokio::spawn({
        let (db, b) = (t.db.clone(), b.clone());
        async move { send_committed(&db, &b, 1..=PER_STREAM).await }
    });
    pa.await.unwrap();
    pb.await.unwrap();
    let start = Instant::now();
    while xlen(a.name()).await + xlen(b.name()).await < 2 * usize::try_from(PER_STREAM).unwrap()
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for a second send, were there one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let mut sent = Vec::new();
    let mut resent = 0;
    for r in relays {
        let s = r.await.unwrap().unwrap();
        sent.push(s.sent);
        resent += s.resends_recognised;
    }
    assert_eq!(
        sent.iter().sum::<u64>(),
        2 * u64::try_from(PER_STREAM).unwrap(),
        "{backend:?}: {sent:?}"
    );
    assert_eq!(
        resent, 0,
        "{backend:?}: no relay sent a row another had sent"
    );
    for s in [&a, &b] {
        let got: Vec<i64> = entries(s.name())
            .await
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(
            got,
            (1..=PER_STREAM).collect::<Vec<_>>(),
            "{backend:?}: {}",
            s.name()
        );
    }
    assert_eq!(outbox_rows(&t.db).await, 0);
    println!("{backend:?}: rows sent per relay {sent:?}");

    // The consumer applies each message of one stream once.
    let hits = bill_everything(&t.db, a_key, PER_STREAM).await;
    assert!(hits.iter().all(|h| *h == 1), "{backend:?}: hits {hits:?}");

    delete_keys(a.name()).await;
    delete_keys(b.name()).await;
    t.cleanup().await;
}

on_every_backend!(
    rolled_back_transaction_sends_nothing,
    committed_messages_arrive_once_in_order_per_stream,
    relay_killed_between_xadd_and_delete_the_effect_happens_once,
    two_relays_at_once_send_each_message_once_in_order,
);

/// A name the outbox cannot keep is a clear error, and nothing is written.
#[tokio::test]
async fn send_in_rejects_names_the_outbox_cannot_keep() {
    let t = TestDb::new(Backend::Sqlite).await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    let long: &'static str = Box::leak("s".repeat(256).into_boxed_str());
    let mut tx = t.db.begin().await.unwrap();
    for (name, says) in [("", "must not be empty"), (long, "at most 255")] {
        let err = Stream::<OrderPlaced>::new(name)
            .send_in(&mut tx, &OrderPlaced { order_id: 1 })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains(says)),
            "{name:?}: {err}"
        );
    }
    tx.commit().await.unwrap();
    assert_eq!(outbox_rows(&t.db).await, 0);
    t.cleanup().await;
}
