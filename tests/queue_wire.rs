//! What the queue worker does on the wire, observed on a private
//! `redis-server` (no other test's traffic reaches it): a stop ends the
//! blocking read with `CLIENT UNBLOCK`, a reconnect re-reads the worker's
//! own pending entries, reads ask for many entries and acknowledgements go
//! in batches, and the drain deadline cancels what still runs.

#![allow(clippy::manual_assert)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::private_redis::PrivateRedis;
use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis::{self, aio::MultiplexedConnection};
use safesync::{CancellationToken, SendOptions, Stream, Summary, Worker};

const GROUP: &str = "wire";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Job {
    id: i64,
}

/// A plain handler that notes each job it starts; jobs in `held` then wait
/// for a permit of `gate` (never given: they run until cancelled).
struct Recorder {
    stream: &'static str,
    seen: Arc<Mutex<Vec<i64>>>,
    held: Vec<i64>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Recorder {
    fn new(stream: &'static str, held: Vec<i64>) -> Recorder {
        Recorder {
            stream,
            seen: Arc::default(),
            held,
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    fn seen(&self) -> Arc<Mutex<Vec<i64>>> {
        Arc::clone(&self.seen)
    }
}

impl safesync::PlainHandler for Recorder {
    type Payload = Job;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        GROUP
    }

    fn handle(&self, job: Job) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(job.id);
            if self.held.contains(&job.id) {
                let _permit = self.gate.acquire().await;
            }
            Ok(())
        })
    }
}

fn unique_stream(prefix: &str) -> &'static str {
    Box::leak(common::unique(prefix).into_boxed_str())
}

async fn conn(url: &str) -> MultiplexedConnection {
    safesync::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn send(url: &str, stream: &'static str, ids: impl IntoIterator<Item = i64>) {
    let jobs: Stream<Job> = Stream::new(stream);
    let mut c = conn(url).await;
    for id in ids {
        jobs.send_on(&mut c, &Job { id }, &SendOptions::default())
            .await
            .unwrap();
    }
}

/// `INFO <section>` as `field → value`.
async fn info(url: &str, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn(url).await)
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// `(calls, failed_calls)` of `command` (`xack`, `client|unblock`) from
/// `INFO commandstats`; `(0, 0)` when it never ran.
async fn calls(url: &str, command: &str) -> (u64, u64) {
    let stats = info(url, "commandstats").await;
    let Some(line) = stats.get(&format!("cmdstat_{command}")) else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .parse()
            .unwrap()
    };
    (field("calls"), field("failed_calls"))
}

/// `CLIENT LIST` ids of the connections named `safesync-reader-<consumer>`
/// (the worker reads its stream and its replay stream, each on its own);
/// only those blocked in a read when `blocked`.
async fn readers(url: &str, consumer: &str, blocked: bool) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn(url).await)
        .await
        .unwrap();
    let name = format!(" name=safesync-reader-{consumer} ");
    list.lines()
        .filter(|l| l.contains(&name) && (!blocked || l.contains(" flags=b ")))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next())
        .map(str::to_owned)
        .collect()
}

async fn blocked_readers(url: &str, consumer: &str) -> Vec<String> {
    readers(url, consumer, true).await
}

/// Entries pending in the group.
async fn pending(url: &str, stream: &str) -> u64 {
    let (n, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .query_async(&mut conn(url).await)
        .await
        .unwrap();
    n
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(
    worker: Worker,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<Summary, Error>> {
    tokio::spawn(worker.run(stop.clone()))
}

/// Stops the worker; its summary and how long the stop took.
async fn stop_and_wait(
    stop: &CancellationToken,
    run: tokio::task::JoinHandle<Result<Summary, Error>>,
) -> (Summary, Duration) {
    let start = Instant::now();
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    (summary, start.elapsed())
}

/// With a one-minute `BLOCK`, the idle worker stops well within the 1 s
/// it would wait for an unblock that did not work, and the server counts
/// one successful `CLIENT UNBLOCK` per blocked
/// read. Without the unblock (the
/// fallback drops the read at once) the count is 0; with an unblock of
/// the wrong client, the stop takes the whole grace second.
async fn a_stop_ends_the_blocked_read_with_client_unblock(backend: Backend) {
    let server = PrivateRedis::start();
    let url = server.url();
    let t = TestDb::new(backend).await;
    let stream = unique_stream("wire_stop");
    let handler = Recorder::new(stream, vec![]);
    let seen = handler.seen();
    send(&url, stream, [1]).await;
    let stop = CancellationToken::new();
    let run = spawn(
        Worker::new(t.db.clone(), safesync::queue::client(&url).unwrap())
            .handle(handler)
            .block(Duration::from_secs(60))
            .consumer_name("stopper"),
        &stop,
    );
    let u = url.as_str();
    wait_for("the entry handled", Duration::from_secs(10), || {
        let seen = Arc::clone(&seen);
        async move { seen.lock().unwrap().len() == 1 && pending(u, stream).await == 0 }
    })
    .await;
    // Two readers: the handler's stream and its group's replay stream.
    wait_for(
        "both readers blocked in XREADGROUP",
        Duration::from_secs(10),
        || async move { blocked_readers(u, "stopper").await.len() == 2 },
    )
    .await;
    assert_eq!(calls(u, "client|unblock").await, (0, 0));

    let (summary, took) = stop_and_wait(&stop, run).await;
    assert!(
        took < Duration::from_millis(800),
        "stop took {took:?}: the blocked read did not end at the unblock"
    );
    assert_eq!(
        calls(u, "client|unblock").await,
        (2, 0),
        "one successful CLIENT UNBLOCK per blocked reader"
    );
    assert_eq!(info(u, "clients").await["blocked_clients"], "0");
    assert_eq!((summary.processed, summary.acked), (1, 1), "{summary:?}");
    t.cleanup().await;
}

/// The server hands the worker's consumer two entries the worker never
/// sees (read by someone else under its name while its one slot is busy),
/// then the worker's reader connection is killed. After reconnecting the
/// worker reads its own pending entries again and handles them — claiming
/// cannot, as `claim_idle` is an hour.
async fn after_a_reconnect_the_worker_reads_its_own_pending_entries_again(backend: Backend) {
    let server = PrivateRedis::start();
    let url = server.url();
    let u = url.as_str();
    let t = TestDb::new(backend).await;
    let stream = unique_stream("wire_reread");
    let handler = Recorder::new(stream, vec![1]);
    let (seen, gate) = (handler.seen(), Arc::clone(&handler.gate));
    send(u, stream, [1]).await;
    let stop = CancellationToken::new();
    let run = spawn(
        Worker::new(t.db.clone(), safesync::queue::client(u).unwrap())
            .handle(handler)
            .concurrency(1)
            .block(Duration::from_secs(60))
            .claim_idle(Duration::from_secs(3600))
            .consumer_name("rereader"),
        &stop,
    );
    let seen_now = || {
        let seen = Arc::clone(&seen);
        move || {
            let seen = Arc::clone(&seen);
            async move { seen.lock().unwrap().clone() }
        }
    };
    let snapshot = seen_now();
    wait_for("job 1 running", Duration::from_secs(10), || {
        let s = snapshot();
        async move { s.await == [1] }
    })
    .await;

    // The worker's only slot is busy, so it is not reading: these two go
    // to its consumer name without it seeing them.
    send(u, stream, [2, 3]).await;
    let mut c = conn(u).await;
    let handed: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("rereader")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(matches!(handed, redis::Value::Array(_)), "{handed:?}");
    assert_eq!(pending(u, stream).await, 3);

    let ids = readers(u, "rereader", false).await;
    assert_eq!(ids.len(), 2, "a reader per stream: {ids:?}");
    for id in ids {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(killed, 1);
    }
    gate.add_permits(1);

    let snapshot = seen_now();
    wait_for(
        "jobs 2 and 3 handled after the reconnect",
        Duration::from_secs(10),
        || {
            let s = snapshot();
            async move {
                let s = s.await;
                s.contains(&2) && s.contains(&3)
            }
        },
    )
    .await;
    wait_for("nothing pending", Duration::from_secs(10), || async move {
        pending(u, stream).await == 0
    })
    .await;
    let (summary, _) = stop_and_wait(&stop, run).await;
    assert_eq!((summary.processed, summary.acked), (3, 3), "{summary:?}");
    t.cleanup().await;
}

/// 400 entries waiting, 8 handlers reading 56 ahead: the worker reads them with `COUNT`
/// above 1 and acknowledges them in batches, so the server sees far fewer
/// `XREADGROUP`s and `XACK`s than entries.
async fn reads_and_acknowledgements_are_batched_on_the_server(backend: Backend) {
    batched_reads(backend, Some(56), 50).await;
}

/// With the defaults (handler timeout 30 s, claim idle 60 s) a worker of 8
/// handlers reads one entry per slot ahead: `COUNT` 9 where a free slot
/// alone would ask for 1, so far fewer `XREADGROUP`s than entries.
async fn by_default_a_worker_reads_ahead_one_entry_per_slot(backend: Backend) {
    batched_reads(backend, None, 70).await;
}

/// 400 entries consumed by 8 handlers reading `read_ahead` ahead (the
/// default when `None`): at most `max_reads` `XREADGROUP`s and 200 `XACK`s.
async fn batched_reads(backend: Backend, read_ahead: Option<usize>, max_reads: u64) {
    const N: i64 = 400;
    let server = PrivateRedis::start();
    let url = server.url();
    let u = url.as_str();
    let t = TestDb::new(backend).await;
    let stream = unique_stream("wire_batch");
    let handler = Recorder::new(stream, vec![]);
    let seen = handler.seen();
    send(u, stream, 1..=N).await;
    let stop = CancellationToken::new();
    let mut worker = Worker::new(t.db.clone(), safesync::queue::client(u).unwrap())
        .handle(handler)
        .concurrency(8)
        .block(Duration::from_secs(60))
        .consumer_name("batcher");
    if let Some(n) = read_ahead {
        worker = worker.read_ahead(n);
    }
    let run = spawn(worker, &stop);
    wait_for("every entry acknowledged", Duration::from_secs(30), || {
        let seen = Arc::clone(&seen);
        async move { seen.lock().unwrap().len() == 400 && pending(u, stream).await == 0 }
    })
    .await;
    let (summary, _) = stop_and_wait(&stop, run).await;
    assert_eq!(
        (summary.processed, summary.acked),
        (400, 400),
        "{summary:?}"
    );

    let (reads, _) = calls(u, "xreadgroup").await;
    let (acks, _) = calls(u, "xack").await;
    eprintln!("{N} entries: {reads} XREADGROUP, {acks} XACK");
    // One entry per read would take 400 reads, one XACK per entry 400.
    assert!(
        reads <= max_reads,
        "{reads} XREADGROUP calls for {N} entries (read ahead: {read_ahead:?})"
    );
    assert!(acks <= 200, "{acks} XACK calls for {N} entries");
    t.cleanup().await;
}

/// A handler still running at the drain deadline is cancelled: the run
/// returns soon after `drain_timeout`, counts it abandoned, and its entry
/// stays pending for the next run, which handles it once.
async fn the_drain_deadline_abandons_a_handler_that_does_not_finish(backend: Backend) {
    let server = PrivateRedis::start();
    let url = server.url();
    let u = url.as_str();
    let t = TestDb::new(backend).await;
    let stream = unique_stream("wire_drain");
    let handler = Recorder::new(stream, vec![1]);
    let seen = handler.seen();
    send(u, stream, [1, 2]).await;
    let stop = CancellationToken::new();
    let run = spawn(
        Worker::new(t.db.clone(), safesync::queue::client(u).unwrap())
            .handle(handler)
            .concurrency(2)
            .drain_timeout(Duration::from_millis(300))
            .consumer_name("drainer"),
        &stop,
    );
    wait_for(
        "job 1 running and job 2 done",
        Duration::from_secs(10),
        || {
            let seen = Arc::clone(&seen);
            async move { seen.lock().unwrap().len() == 2 && pending(u, stream).await == 1 }
        },
    )
    .await;
    let (summary, took) = stop_and_wait(&stop, run).await;
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "stop took {took:?} with a 300 ms drain deadline"
    );
    assert_eq!(
        (summary.processed, summary.acked, summary.abandoned),
        (1, 1, 1),
        "{summary:?}"
    );
    assert_eq!(
        pending(u, stream).await,
        1,
        "the abandoned entry stays pending"
    );

    // The next run under the same name reads its own pending entry again
    // (no claim: `claim_idle` is an hour) and handles it once.
    let handler = Recorder::new(stream, vec![]);
    let seen = handler.seen();
    let stop = CancellationToken::new();
    let run = spawn(
        Worker::new(t.db.clone(), safesync::queue::client(u).unwrap())
            .handle(handler)
            .claim_idle(Duration::from_secs(3600))
            .consumer_name("drainer"),
        &stop,
    );
    wait_for("job 1 handled again", Duration::from_secs(10), || {
        let seen = Arc::clone(&seen);
        async move { seen.lock().unwrap().len() == 1 && pending(u, stream).await == 0 }
    })
    .await;
    // Time for a wrong second delivery to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (summary, _) = stop_and_wait(&stop, run).await;
    assert_eq!(*seen.lock().unwrap(), [1], "handled once");
    assert_eq!(
        (summary.processed, summary.acked, summary.abandoned),
        (1, 1, 0),
        "{summary:?}"
    );
    t.cleanup().await;
}

on_every_backend!(
    a_stop_ends_the_blocked_read_with_client_unblock,
    after_a_reconnect_the_worker_reads_its_own_pending_entries_again,
    reads_and_acknowledgements_are_batched_on_the_server,
    by_default_a_worker_reads_ahead_one_entry_per_slot,
    the_drain_deadline_abandons_a_handler_that_does_not_finish,
);
