//! The queue under real faults: worker processes stopped with SIGTERM or
//! killed with SIGKILL mid-stream, a private Redis restarted mid-run, and a
//! database connection killed mid-handler. In every case each order's
//! effect is applied exactly once and nothing is left pending. Worker
//! processes are this test binary, re-run with `SAFESYNC_QUEUE_CHILD` set;
//! the private Redis runs on a free port and the shared one is never
//! touched. (Connections black-holed and idle consumers:
//! `tests/queue_redis_faults.rs`.)

#![allow(clippy::manual_assert)]

mod common;

use std::time::{Duration, Instant};

use common::faults::{
    Bill, MESSAGES, Order, OrderPlaced, delete_stream, pending, pending_entries, progress,
    redis_url, setup, wait_for_progress,
};
use common::private_redis::PrivateRedis;
use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis;
use safesync::{CancellationToken, Handler, Worker};

const CHILD_ENV: &str = "SAFESYNC_QUEUE_CHILD";

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

/// Waits until the group `billing` of `stream` was handed `at_least`
/// entries (`XINFO GROUPS`' `entries-read`, Redis 7).
async fn wait_for_delivered(stream: &str, at_least: i64, limit: Duration) {
    let client = safesync::redis::Client::open(redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    loop {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut c)
            .await
            .unwrap();
        let read = groups
            .iter()
            .find(|g| {
                g.get("name").is_some_and(|n| {
                    redis::from_redis_value::<String>(n).ok().as_deref() == Some("billing")
                })
            })
            .and_then(|g| g.get("entries-read"))
            .and_then(|v| redis::from_redis_value::<i64>(v).ok())
            .unwrap_or(0);
        if read >= at_least {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{read} of {at_least} entries read within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sigterm_mid_stream_loses_nothing_and_applies_nothing_twice(backend: Backend) {
    let stream = common::unique("q_term");
    let t = setup(backend, &stream, &redis_url()).await;
    let child = spawn_worker(backend, &t, &stream, 500);
    // Watched on Redis, not in the database: on SQLite a reader there can
    // lag far behind a worker that keeps the write lock busy.
    wait_for_delivered(&stream, 40, Duration::from_secs(60)).await;
    signal(&child, "-TERM");
    let out = finish(child).await;
    assert!(
        out.status.success(),
        "worker exit after SIGTERM: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (done_by_child, twice) = progress(&t.db).await;
    assert!(
        done_by_child < MESSAGES,
        "the stop came mid-stream: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    wait_for_delivered(&stream, 60, Duration::from_secs(60)).await;
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

on_every_backend!(
    sigterm_mid_stream_loses_nothing_and_applies_nothing_twice,
    sigkilled_worker_process_loses_nothing_and_applies_nothing_twice,
    redis_restarted_mid_run_the_worker_reconnects_and_finishes,
);

on_servers!(db_connection_killed_mid_handler_rolls_back_and_the_entry_is_retried);
