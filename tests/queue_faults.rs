//! The queue under real faults: worker processes stopped with SIGTERM or
//! killed with SIGKILL mid-stream, and a private Redis restarted mid-run.
//! In every case each order's effect is applied exactly once and nothing is
//! left pending. Worker processes are this test binary, re-run with
//! `SAFESYNC_QUEUE_CHILD` set; the private Redis runs on a free port and the
//! shared one is never touched.

#![allow(clippy::manual_assert)]

mod common;

use std::time::{Duration, Instant};

use common::private_redis::PrivateRedis;
use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis;
use safesync::{CancellationToken, Handler, SendOptions, Stream, Worker};

const CHILD_ENV: &str = "SAFESYNC_QUEUE_CHILD";
const MESSAGES: i64 = 400;

fn redis_url() -> String {
    std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: i64,
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

/// Locks the order, counts the effect, then lingers inside the transaction
/// so that stops and kills land while work is in flight.
struct Bill {
    stream: &'static str,
    linger: Duration,
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

async fn setup(backend: Backend, stream: &str, redis_url: &str) -> TestDb {
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
    let client = safesync::queue::client(redis_url).unwrap();
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
async fn progress(db: &Db) -> (i64, i64) {
    let mut tx = db.begin().await.unwrap();
    let (mut done, mut twice) = (0, 0);
    for id in 1..=MESSAGES {
        let o = Order::find(&mut tx, &id).await.unwrap().unwrap();
        done += i64::from(o.hits >= 1);
        twice += i64::from(o.hits > 1);
    }
    tx.commit().await.unwrap();
    (done, twice)
}

async fn wait_for_progress(db: &Db, at_least: i64, limit: Duration) {
    let start = Instant::now();
    while progress(db).await.0 < at_least {
        assert!(
            start.elapsed() < limit,
            "no progress to {at_least} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pending(redis_url: &str, stream: &str) -> u64 {
    let client = safesync::queue::client(redis_url).unwrap();
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
async fn pending_entries(redis_url: &str, stream: &str) -> Vec<(String, String)> {
    let client = safesync::queue::client(redis_url).unwrap();
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

async fn delete_stream(redis_url: &str, stream: &str) {
    let client = safesync::queue::client(redis_url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(stream)
        .arg(safesync::queue::dead_letter_key(stream, "billing"))
        .arg(safesync::queue::replay_key(stream, "billing"))
        .query_async(&mut c)
        .await
        .unwrap();
}

fn spawn_worker(
    backend: Backend,
    t: &TestDb,
    stream: &str,
    claim_idle_ms: u64,
) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "queue_worker_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}|{}|{}|{}|{}",
                backend.name(),
                t.namespace(),
                stream,
                redis_url(),
                claim_idle_ms
            ),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("child still running");
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn finish(child: tokio::process::Child) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("worker process exits")
        .unwrap()
}

/// The body of a worker process; a no-op unless started by a test below.
#[test]
fn queue_worker_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (backend, namespace, stream, url, claim_idle_ms) = (
        Backend::from_name(parts[0]),
        parts[1],
        parts[2],
        parts[3],
        parts[4].parse::<u64>().unwrap(),
    );
    let stream: &'static str = Box::leak(stream.to_owned().into_boxed_str());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = common::attach(backend, namespace).await;
        let client = safesync::queue::client(url).unwrap();
        let summary = Worker::new(db, client)
            .handle(Bill {
                stream,
                linger: Duration::from_millis(10),
            })
            .concurrency(4)
            .block(Duration::from_secs(1))
            .claim_idle(Duration::from_millis(claim_idle_ms))
            .run_until_signal()
            .await
            .unwrap();
        println!("child summary: {summary:?}");
    });
}

async fn sigterm_mid_stream_loses_nothing_and_applies_nothing_twice(backend: Backend) {
    let stream = common::unique("q_term");
    let t = setup(backend, &stream, &redis_url()).await;
    let child = spawn_worker(backend, &t, &stream, 500);
    wait_for_progress(&t.db, 40, Duration::from_secs(60)).await;
    signal(&child, "-TERM");
    let out = finish(child).await;
    assert!(
        out.status.success(),
        "worker exit after SIGTERM: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (done_by_child, twice) = progress(&t.db).await;
    assert!(done_by_child < MESSAGES, "the stop came mid-stream");
    assert_eq!(twice, 0);

    // A second worker finishes the rest.
    let stop = CancellationToken::new();
    let client = safesync::queue::client(&redis_url()).unwrap();
    let s: &'static str = Box::leak(stream.clone().into_boxed_str());
    let run = tokio::spawn(
        Worker::new(t.db.clone(), client)
            .handle(Bill {
                stream: s,
                linger: Duration::ZERO,
            })
            .concurrency(4)
            .block(Duration::from_millis(500))
            .claim_idle(Duration::from_millis(500))
            .run(stop.clone()),
    );
    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(
        progress(&t.db).await,
        (MESSAGES, 0),
        "every order exactly once"
    );
    assert_eq!(pending(&redis_url(), &stream).await, 0);
    delete_stream(&redis_url(), &stream).await;
    t.cleanup().await;
}

/// W6: one of two worker processes is killed with SIGKILL mid-stream; the
/// other claims its entries after `claim_idle` and finishes.
async fn sigkilled_worker_process_loses_nothing_and_applies_nothing_twice(backend: Backend) {
    let stream = common::unique("q_kill");
    let t = setup(backend, &stream, &redis_url()).await;
    let claim_idle = Duration::from_secs(1);
    let victim = spawn_worker(backend, &t, &stream, 1000);
    let survivor = spawn_worker(backend, &t, &stream, 1000);
    wait_for_progress(&t.db, 60, Duration::from_secs(60)).await;
    let victim_pid = victim.id().unwrap();
    signal(&victim, "-KILL");
    let killed_at = Instant::now();
    let out = finish(victim).await;
    assert!(!out.status.success(), "the victim was killed");

    // The entries the victim held when it died: claimed by the survivor
    // once idle for claim_idle, then handled.
    // (Worker consumer names are `<host>-<pid>-<n>`.)
    let tag = format!("-{victim_pid}-");
    let held: Vec<String> = pending_entries(&redis_url(), &stream)
        .await
        .into_iter()
        .filter(|(_, consumer)| consumer.contains(&tag))
        .map(|(id, _)| id)
        .collect();
    let recovered = loop {
        let still = pending_entries(&redis_url(), &stream).await;
        if !held.iter().any(|id| still.iter().any(|(p, _)| p == id)) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the victim's entries were never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    let drained = killed_at.elapsed();
    // Entries the victim held come back once idle for claim_idle.
    let start = Instant::now();
    while pending(&redis_url(), &stream).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pending entries never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{backend:?}: the victim's {} entries taken over {recovered:?} after SIGKILL, \
         the whole stream drained after {drained:?} (claim_idle {claim_idle:?})",
        held.len()
    );
    signal(&survivor, "-TERM");
    let out = finish(survivor).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        progress(&t.db).await,
        (MESSAGES, 0),
        "every order exactly once"
    );
    delete_stream(&redis_url(), &stream).await;
    t.cleanup().await;
}

/// The WARN and ERROR events of this process, as `(level, message)`: a
/// global subscriber installed by the test that looks at log levels.
static LOGGED: std::sync::Mutex<Vec<(tracing::Level, String)>> = std::sync::Mutex::new(Vec::new());

/// Held by each backend's run of
/// `redis_restarted_mid_run_the_worker_reconnects_and_finishes`.
static RESTARTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Records WARN and ERROR events in [`LOGGED`]; nothing else.
struct Recorder;

impl tracing::Subscriber for Recorder {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        LOGGED
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

async fn redis_restarted_mid_run_the_worker_reconnects_and_finishes(backend: Backend) {
    // Acks lost in the outage are recovered through the ledger: a warning,
    // not an error. One backend at a time, so the events logged are this
    // run's.
    let _ = tracing::subscriber::set_global_default(Recorder);
    let _one_at_a_time = RESTARTS.lock().await;
    LOGGED.lock().unwrap().clear();
    let mut redis_server = PrivateRedis::start();
    let url = redis_server.url();
    let stream = common::unique("q_restart");
    let t = setup(backend, &stream, &url).await;
    let s: &'static str = Box::leak(stream.clone().into_boxed_str());
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        Worker::new(t.db.clone(), safesync::queue::client(&url).unwrap())
            .handle(Bill {
                stream: s,
                linger: Duration::from_millis(5),
            })
            .concurrency(4)
            .block(Duration::from_millis(500))
            .claim_idle(Duration::from_millis(500))
            .run(stop.clone()),
    );
    wait_for_progress(&t.db, 60, Duration::from_secs(60)).await;
    redis_server.down();
    let (during_outage, _) = progress(&t.db).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis_server.up();
    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    let start = Instant::now();
    while pending(&url, &stream).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pending entries never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!("restart at {during_outage}/{MESSAGES}: {summary:?}");
    let lost_acks: Vec<tracing::Level> = LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.starts_with("acknowledging failed; the entries stay pending"))
        .map(|(level, _)| *level)
        .collect();
    assert!(
        !lost_acks.is_empty(),
        "the outage lost acknowledgements (else this proves nothing)"
    );
    assert!(
        lost_acks.iter().all(|l| *l == tracing::Level::WARN),
        "lost acks are logged at WARN: {lost_acks:?}"
    );
    assert!(during_outage < MESSAGES, "the restart came mid-stream");
    assert_eq!(
        progress(&t.db).await,
        (MESSAGES, 0),
        "every order exactly once"
    );
    t.cleanup().await;
}

on_servers!(db_connection_killed_mid_handler_rolls_back_and_the_entry_is_retried);

#[tokio::test]
async fn idle_consumers_are_removed_only_when_nothing_is_pending() {
    let url = redis_url();
    let stream = common::unique("q_idle");
    let client = safesync::queue::client(&url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("billing")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .unwrap();
    for i in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("data")
            .arg(format!("{{\"order_id\":{i}}}"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // `done` reads one entry and acks it; `busy` reads one and keeps it pending.
    for consumer in ["done", "busy"] {
        let _read: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("billing")
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        if consumer == "done" {
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("billing")
                .arg("-")
                .arg("+")
                .arg(10)
                .arg("done")
                .query_async(&mut c)
                .await
                .unwrap();
            let redis::Value::Array(entries) = pending else {
                panic!("{pending:?}")
            };
            for e in entries {
                let redis::Value::Array(fields) = e else {
                    panic!()
                };
                let redis::Value::BulkString(id) = &fields[0] else {
                    panic!()
                };
                let acked: i64 = redis::cmd("XACK")
                    .arg(&stream)
                    .arg("billing")
                    .arg(id.as_slice())
                    .query_async(&mut c)
                    .await
                    .unwrap();
                assert_eq!(acked, 1);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed = safesync::queue::remove_idle_consumers(
        &client,
        &stream,
        "billing",
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert_eq!(removed, vec!["done".to_owned()]);
    let h = safesync::queue::health(&client, &stream, "billing")
        .await
        .unwrap();
    let names: Vec<_> = h
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(
        names,
        vec![("busy", 1)],
        "the consumer with a pending entry is kept, and so is its entry"
    );
    assert_eq!(h.pending, 1);
    delete_stream(&url, &stream).await;
}

/// Kills its own database connection (from outside, like an operator's
/// `KILL`) in the middle of the handler for order 7, once.
struct KillOnce {
    stream: &'static str,
    admin: Db,
    killed: std::sync::atomic::AtomicBool,
}

impl Handler for KillOnce {
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
        use safesync::sqlx;
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            let mut o = Order::lock(tx, &msg.order_id)
                .await?
                .ok_or_else(Error::not_found)?;
            o.hits += 1;
            o.update(tx).await?;
            if msg.order_id == 7 && !self.killed.swap(true, Ordering::SeqCst) {
                if let Some(conn) = tx.as_mysql() {
                    let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                        .fetch_one(conn)
                        .await?;
                    sqlx::query(&format!("KILL {id}"))
                        .execute(self.admin.as_mysql().unwrap())
                        .await?;
                } else if let Some(conn) = tx.as_postgres() {
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(conn)
                        .await?;
                    sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .execute(self.admin.as_postgres().unwrap())
                        .await?;
                }
            }
            Ok(())
        })
    }
}

/// Servers only: an embedded database has no connection to kill.
async fn db_connection_killed_mid_handler_rolls_back_and_the_entry_is_retried(backend: Backend) {
    let stream = common::unique("q_dbkill");
    let t = setup(backend, &stream, &redis_url()).await;
    let s: &'static str = Box::leak(stream.clone().into_boxed_str());
    let handler = KillOnce {
        stream: s,
        admin: t.other_db().await,
        killed: false.into(),
    };
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        Worker::new(t.db.clone(), safesync::queue::client(&redis_url()).unwrap())
            .handle(handler)
            .concurrency(4)
            .block(Duration::from_millis(500))
            .claim_idle(Duration::from_millis(500))
            .run(stop.clone()),
    );
    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    let start = Instant::now();
    while pending(&redis_url(), &stream).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pending entries never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(
        summary.failed >= 1,
        "the killed transaction failed: {summary:?}"
    );
    assert_eq!(
        progress(&t.db).await,
        (MESSAGES, 0),
        "every order exactly once, order 7 included"
    );
    delete_stream(&redis_url(), &stream).await;
    t.cleanup().await;
}

async fn the_worker_removes_idle_consumers_and_refreshes_health_gauges(backend: Backend) {
    let stream = common::unique("q_house");
    let t = setup(backend, &stream, &redis_url()).await;
    let client = safesync::queue::client(&redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("billing")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg("billing")
        .arg("ghost")
        .query_async(&mut c)
        .await
        .unwrap();

    let registry = safesync::prometheus::Registry::new();
    let metrics = safesync::queue::QueueMetrics::register(&registry).unwrap();
    let s: &'static str = Box::leak(stream.clone().into_boxed_str());
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        Worker::new(t.db.clone(), client.clone())
            .handle(Bill {
                stream: s,
                linger: Duration::ZERO,
            })
            .concurrency(4)
            .block(Duration::from_millis(200))
            .metrics(metrics)
            .housekeeping_every(Duration::from_millis(100))
            // Well above `block` (200 ms): the worker's own consumer reads
            // at least that often, so it is not idle that long unless the
            // machine stalls (its own name is not exempt from removal).
            .remove_idle_consumers_after(Duration::from_secs(1))
            .run(stop.clone()),
    );
    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    let start = Instant::now();
    loop {
        let h = safesync::queue::health(&client, &stream, "billing")
            .await
            .unwrap();
        let ghost = h.consumers.iter().any(|c| c.name == "ghost");
        let text = safesync::prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let gauge = text.lines().any(|l| {
            l.starts_with("safesync_queue_length{") && l.ends_with(&format!(" {MESSAGES}"))
        });
        if !ghost && gauge && h.pending == 0 {
            assert!(!h.consumers.is_empty(), "the worker's own consumer stays");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ghost still there or gauges stale: {h:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    delete_stream(&redis_url(), &stream).await;
    t.cleanup().await;
}

/// A TCP proxy to the shared Redis that can black-hole traffic: bytes are
/// swallowed in both directions while connections stay open, as with a dead
/// peer behind a firewall.
struct BlackHoleProxy {
    port: u16,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHoleProxy {
    async fn start(upstream: std::net::SocketAddr) -> BlackHoleProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let swallow = std::sync::Arc::new(AtomicBool::new(false));
        let flag = swallow.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut from, mut to, flag) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                        flag.clone(),
                    ),
                    (Box::new(ro), Box::new(wi), flag.clone()),
                ] {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) {
                                continue; // swallowed
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        BlackHoleProxy { port, swallow }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn black_hole(&self, on: bool) {
        self.swallow.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn a_black_holed_connection_cannot_hang_the_worker(backend: Backend) {
    let upstream = {
        let url = redis_url();
        let host_port = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = BlackHoleProxy::start(upstream).await;
    let stream = common::unique("q_hole");
    let t = setup(backend, &stream, &redis_url()).await;
    let s: &'static str = Box::leak(stream.clone().into_boxed_str());
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        Worker::new(t.db.clone(), safesync::queue::client(&proxy.url()).unwrap())
            .handle(Bill {
                stream: s,
                linger: Duration::from_millis(5),
            })
            .concurrency(4)
            .block(Duration::from_millis(500))
            .claim_idle(Duration::from_millis(500))
            .run(stop.clone()),
    );
    wait_for_progress(&t.db, 60, Duration::from_secs(60)).await;
    proxy.black_hole(true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (during, _) = progress(&t.db).await;
    proxy.black_hole(false);
    // Every read and command has a client deadline: the worker gives up on
    // the dead connections, reconnects, and finishes.
    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    let start = Instant::now();
    while pending(&redis_url(), &stream).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pending entries never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    eprintln!("black hole at {during}/{MESSAGES}: {summary:?}");
    assert!(during < MESSAGES, "the black hole came mid-stream");
    assert_eq!(
        progress(&t.db).await,
        (MESSAGES, 0),
        "every order exactly once"
    );
    delete_stream(&redis_url(), &stream).await;
    t.cleanup().await;
}

on_every_backend!(
    sigterm_mid_stream_loses_nothing_and_applies_nothing_twice,
    sigkilled_worker_process_loses_nothing_and_applies_nothing_twice,
    redis_restarted_mid_run_the_worker_reconnects_and_finishes,
    the_worker_removes_idle_consumers_and_refreshes_health_gauges,
    a_black_holed_connection_cannot_hang_the_worker,
);
