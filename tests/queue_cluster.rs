//! The queue on a private Redis Cluster (3 masters, 3 replicas): 2,000
//! messages over 4 streams on different masters, consumed by 3 worker
//! processes, every effect exactly once; the same with a master killed by
//! SIGKILL mid-run (a replica takes over, the workers follow it, nothing is
//! applied twice, and what asynchronous replication lost is counted and
//! printed); dead letters, replay and health on the cluster; the outbox
//! relay.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Backend;
use common::cluster::{self, Cluster};
use common::faults::{Bill, OrderPlaced};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::{CancellationToken, Handler, Stream, Worker};

const CHILD_ENV: &str = "SAFESYNC_CLUSTER_WORKER";
const MESSAGES: i64 = 2000;
const STREAMS: usize = 4;
const WORKERS: usize = 3;
/// How long the workers may take to drain every stream.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// One worker process: every stream's `billing` group, on the cluster
/// whose ports and streams its parent passed, until the parent writes a
/// row into `cluster_stop`; then writes its summary's counts into
/// `cluster_summary`.
#[test]
fn cluster_worker_child() {
    let Some((backend, namespace, name, rt)) = common::processes::child(CHILD_ENV) else {
        return;
    };
    rt.block_on(async move {
        let mut spec = name.split(';');
        let (ports, streams, claim_idle) = (
            spec.next().unwrap(),
            spec.next().unwrap(),
            spec.next().unwrap().parse().unwrap(),
        );
        let seeds: Vec<String> = ports
            .split(',')
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        let db = common::attach(backend, &namespace).await;
        let mut worker = Worker::new(db.clone(), safesync::queue::cluster(&seeds).unwrap())
            .concurrency(4)
            .block(Duration::from_secs(2))
            .claim_idle(Duration::from_secs(claim_idle));
        for stream in streams.split(',') {
            worker = worker.handle(Bill {
                stream: leak(stream),
                linger: Duration::from_millis(1),
            });
        }
        let stop = CancellationToken::new();
        let run = tokio::spawn(worker.run(stop.clone()));
        while db
            .fetch_one::<i64>("SELECT COUNT(*) FROM cluster_stop", ())
            .await
            .unwrap()
            == 0
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.cancel();
        let summary = run.await.unwrap().unwrap();
        eprintln!("worker {}: {summary:?}", std::process::id());
        db.execute_with(
            "INSERT INTO cluster_summary (pid, acked, duplicates, claimed) VALUES (?, ?, ?, ?)",
            (
                i64::from(std::process::id()),
                i64::try_from(summary.acked).unwrap(),
                i64::try_from(summary.duplicates).unwrap(),
                i64::try_from(summary.claimed).unwrap(),
            ),
        )
        .await
        .unwrap();
        db.close().await;
    });
}

/// The orders table, one row per message, and `cluster_stop`.
async fn setup(backend: Backend) -> common::TestDb {
    let t = common::TestDb::new(backend).await;
    t.exec("CREATE TABLE orders (id BIGINT PRIMARY KEY, hits BIGINT NOT NULL, version BIGINT NOT NULL)")
        .await;
    t.exec("CREATE TABLE cluster_stop (id BIGINT PRIMARY KEY)")
        .await;
    t.exec("CREATE TABLE cluster_summary (pid BIGINT PRIMARY KEY, acked BIGINT NOT NULL, duplicates BIGINT NOT NULL, claimed BIGINT NOT NULL)")
        .await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=MESSAGES {
        tx.execute_with(
            "INSERT INTO orders (id, hits, version) VALUES (?, 0, 0)",
            (id,),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    t
}

/// Creates the `billing` group of every stream (from the start), so that
/// nothing sent before a worker's first read is skipped.
async fn create_groups(redis: &safesync::queue::Redis, streams: &[String]) {
    let client = redis.cluster_client().unwrap();
    let mut c = client.get_async_connection().await.unwrap();
    for s in streams {
        let _: () = safesync::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg("billing")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// Waits until every stream's `billing` group has read everything and
/// has nothing pending.
async fn wait_drained(redis: &safesync::queue::Redis, streams: &[String]) {
    let start = Instant::now();
    loop {
        let mut done = true;
        let mut state = Vec::new();
        for s in streams {
            match safesync::queue::health(redis, s, "billing").await {
                Ok(h) => {
                    done &= h.pending == 0 && h.lag == Some(0);
                    state.push(format!("{s}: pending {} lag {:?}", h.pending, h.lag));
                }
                Err(e) => {
                    done = false;
                    state.push(format!("{s}: {e}"));
                }
            }
        }
        if done {
            return;
        }
        assert!(
            start.elapsed() < DRAIN_LIMIT,
            "not drained after {DRAIN_LIMIT:?}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What became of the messages: `sent` as the producer saw it (an entry
/// id), the rest as the database says (`delivered`: applied once; `lost`:
/// sent but never applied).
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    delivered: usize,
    lost: usize,
    lost_after_failover: usize,
    unsent: usize,
    unsent_but_applied: usize,
    doubles: usize,
}

impl Tally {
    /// `sent[i]`: whether order `i + 1`'s send got an id, and whether it
    /// was sent after the failover.
    async fn of(db: &Db, sent: &[(bool, bool)]) -> Tally {
        let ids = async |sql: &str| -> std::collections::HashSet<i64> {
            db.fetch_all::<i64>(sql, ())
                .await
                .unwrap()
                .into_iter()
                .collect()
        };
        let unapplied = ids("SELECT id FROM orders WHERE hits = 0").await;
        let mut tally = Tally {
            sent: sent.iter().filter(|(ok, _)| *ok).count(),
            delivered: ids("SELECT id FROM orders WHERE hits = 1").await.len(),
            doubles: ids("SELECT id FROM orders WHERE hits > 1").await.len(),
            ..Tally::default()
        };
        for (id, (ok, after)) in (1..=MESSAGES).zip(sent) {
            match (ok, unapplied.contains(&id)) {
                (true, false) => {}
                (true, true) => {
                    tally.lost += 1;
                    tally.lost_after_failover += usize::from(*after);
                }
                (false, true) => tally.unsent += 1,
                (false, false) => tally.unsent_but_applied += 1,
            }
        }
        tally
    }
}

/// The worker processes' summed `acked`, `duplicates` and `claimed`.
async fn worker_counts(db: &Db) -> (i64, i64, i64) {
    let sum = async |column: &str| -> i64 {
        let sql = format!("SELECT {column} FROM cluster_summary");
        db.fetch_all::<i64>(&sql, ()).await.unwrap().iter().sum()
    };
    (
        sum("acked").await,
        sum("duplicates").await,
        sum("claimed").await,
    )
}

/// 2,000 messages over 4 streams on different masters, 3 worker
/// processes; with `kill`, the master of the first stream gets SIGKILL
/// after a third of the messages.
async fn consume_on_the_cluster(backend: Backend, kill: bool) {
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let streams = cluster.names_on_masters(&common::unique("cl"), STREAMS);
    let masters: std::collections::HashSet<u16> =
        streams.iter().map(|s| cluster.master_of(s)).collect();
    assert_eq!(masters.len(), 3, "the streams cover every master");
    let t = setup(backend).await;
    let redis = cluster.redis();
    create_groups(&redis, &streams).await;

    let ports: Vec<String> = cluster.ports.iter().map(u16::to_string).collect();
    // Without a kill nothing stays pending for long: a claim (after 30 s)
    // would mean an acknowledgement was lost.
    let claim_idle = if kill { 3 } else { 30 };
    let spec = format!("{};{};{claim_idle}", ports.join(","), streams.join(","));
    let namespace = t.namespace().to_owned();
    let workers = tokio::spawn(async move {
        common::processes::run(
            "cluster_worker_child",
            CHILD_ENV,
            [backend.name(), &namespace, &spec],
            WORKERS,
            DRAIN_LIMIT + Duration::from_secs(60),
        )
        .await;
    });

    let handles: Vec<Stream<OrderPlaced>> = streams.iter().map(|s| Stream::new(leak(s))).collect();
    let victim = cluster.master_of(&streams[0]);
    // Per order: whether the producer got an entry id, and whether it
    // sent after the failover was complete.
    let mut sent: Vec<(bool, bool)> = Vec::new();
    let mut failed_over = false;
    for order_id in 1..=MESSAGES {
        if kill && order_id == MESSAGES / 3 {
            cluster.kill(victim);
            eprintln!(
                "killed the master on port {victim} (serving `{}`)",
                streams[0]
            );
        }
        if kill && order_id == MESSAGES / 2 {
            // Sending went on meanwhile (sends to the dead master failed
            // or waited); from here on every slot has a master again.
            cluster = tokio::task::spawn_blocking(move || {
                cluster.wait_failover();
                cluster
            })
            .await
            .unwrap();
            failed_over = true;
            eprintln!("failover done: masters {:?}", cluster.masters());
        }
        let stream = &handles[usize::try_from(order_id).unwrap() % STREAMS];
        let ok = stream.send(&redis, &OrderPlaced { order_id }).await.is_ok();
        sent.push((ok, failed_over));
    }
    if kill {
        assert!(failed_over, "the failover was awaited");
        assert!(
            !cluster.masters().contains(&victim),
            "the killed master is no master now"
        );
    }
    wait_drained(&redis, &streams).await;
    t.exec("INSERT INTO cluster_stop (id) VALUES (1)").await;
    workers.await.unwrap();

    let tally = Tally::of(&t.db, &sent).await;
    let (acked, duplicates, claimed) = worker_counts(&t.db).await;
    println!(
        "workers: acked {acked}, claimed {claimed}, redeliveries the ledger recognised {duplicates}"
    );
    println!(
        "cluster run ({}, kill: {kill}): sent {}, delivered {}, lost to asynchronous \
         replication {}, sends that failed {} (of which applied anyway: {}), applied twice {}",
        backend.name(),
        tally.sent,
        tally.delivered,
        tally.lost,
        tally.unsent,
        tally.unsent_but_applied,
        tally.doubles
    );
    assert_eq!(tally.doubles, 0, "an effect applied twice");
    // Applied once (counted in the database) or lost (sent, never
    // applied): nothing else became of a sent message. A send that failed
    // but had reached Redis is applied without being counted as sent.
    assert_eq!(
        tally.delivered + tally.lost,
        tally.sent + tally.unsent_but_applied,
        "every sent message delivered or lost"
    );
    assert_eq!(
        tally.lost_after_failover, 0,
        "a message sent after the failover was lost"
    );
    if kill {
        let after = sent.iter().filter(|(ok, a)| *ok && *a).count();
        assert!(after > 0, "messages were sent after the failover");
    } else {
        assert_eq!((tally.delivered, tally.lost, tally.unsent), (2000, 0, 0));
        // Every entry acknowledged once: no ack was refused (a pipeline of
        // acks over two slots is, on a cluster) and nothing came twice.
        assert_eq!((acked, duplicates, claimed), (2000, 0, 0));
    }
    t.cleanup().await;
    drop(cluster);
}

async fn every_effect_once_with_three_worker_processes(backend: Backend) {
    consume_on_the_cluster(backend, false).await;
}

async fn a_master_killed_mid_run_fails_over_and_nothing_is_applied_twice(backend: Backend) {
    consume_on_the_cluster(backend, true).await;
}

/// Bills an order, except order `fails` while `failing` is set.
struct Picky {
    stream: &'static str,
    fails: i64,
    failing: Arc<AtomicBool>,
}

impl Handler for Picky {
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
            if msg.order_id == self.fails && self.failing.load(Ordering::SeqCst) {
                return Err(Error::Config("order refused".to_owned()));
            }
            tx.execute_with(
                "UPDATE orders SET hits = hits + 1 WHERE id = ?",
                (msg.order_id,),
            )
            .await?;
            Ok(())
        })
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the worker: each blocked read is unblocked on the node it is
/// blocked on, so each master runs as many `CLIENT UNBLOCK`s as it had
/// blocked clients (one sent elsewhere would find no such client, or
/// another one), and the stop does not wait out the 30 s `BLOCK`.
async fn stop_unblocking_on_each_node(
    cluster: &Cluster,
    stop: &CancellationToken,
    run: tokio::task::JoinHandle<Result<safesync::Summary, Error>>,
) -> safesync::Summary {
    let masters = cluster.masters();
    let blocked: Vec<u64> = masters
        .iter()
        .map(|p| cluster::info_number(*p, "clients", "blocked_clients"))
        .collect();
    assert!(blocked.iter().sum::<u64>() >= 2, "{blocked:?}");
    for p in &masters {
        cluster::cli(*p, &["CONFIG", "RESETSTAT"]);
    }
    let stopping = Instant::now();
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the blocking reads waited out their BLOCK: {:?}",
        stopping.elapsed()
    );
    let unblocks: Vec<u64> = masters.iter().map(|p| cluster::unblock_calls(*p)).collect();
    assert_eq!(
        unblocks, blocked,
        "CLIENT UNBLOCKs per master (ports {masters:?}) against the reads blocked there"
    );
    summary
}

/// One worker on two streams of two masters: a failing message is
/// dead-lettered, `health` tells it, `replay_dead_letter` hands it back and
/// it is applied once; a stop ends the worker's blocking reads at once on
/// their nodes (`CLIENT UNBLOCK`), long before their 30 s `BLOCK`.
async fn dead_letters_replay_and_health_on_the_cluster(backend: Backend) {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let streams = cluster.names_on_masters(&common::unique("cl_dead"), 2);
    let redis = cluster.redis();
    create_groups(&redis, &streams).await;
    let t = setup(backend).await;
    let failing = Arc::new(AtomicBool::new(true));
    let mut worker = Worker::new(t.db.clone(), redis.clone())
        .max_deliveries(1)
        .block(Duration::from_secs(30));
    for (i, s) in streams.iter().enumerate() {
        worker = worker.handle(Picky {
            stream: leak(s),
            fails: if i == 0 { 7 } else { -1 },
            failing: Arc::clone(&failing),
        });
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    for (i, s) in streams.iter().enumerate() {
        let stream: Stream<OrderPlaced> = Stream::new(leak(s));
        for n in 1..=10 {
            let order_id = i64::try_from(i).unwrap() * 10 + n;
            stream
                .send(&redis, &OrderPlaced { order_id })
                .await
                .unwrap();
        }
    }
    let first = streams[0].clone();
    eventually("order 7 dead-lettered, the rest applied", async || {
        let h = safesync::queue::health(&redis, &first, "billing")
            .await
            .unwrap();
        h.dead_letters == 1 && h.pending == 0 && h.lag == Some(0)
    })
    .await;
    let h = safesync::queue::health(&redis, &first, "billing")
        .await
        .unwrap();
    assert_eq!(h.length, 10);
    let last = h.last_error.expect("the failure is in health");
    assert!(last.reason.contains("order refused"), "{last:?}");

    let dead = safesync::queue::dead_letters(&redis, &first, "billing")
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    failing.store(false, Ordering::SeqCst);
    safesync::queue::replay_dead_letter(&redis, &first, "billing", &dead[0].id)
        .await
        .unwrap();
    let db = t.db.clone();
    eventually("every order applied", async || {
        db.fetch_one::<i64>("SELECT COUNT(*) FROM orders WHERE hits = 1", ())
            .await
            .unwrap()
            == 20
    })
    .await;
    assert!(
        safesync::queue::dead_letters(&redis, &first, "billing")
            .await
            .unwrap()
            .is_empty()
    );
    for s in &streams {
        let h = safesync::queue::health(&redis, s, "billing").await.unwrap();
        assert_eq!((h.pending, h.lag), (0, Some(0)), "{s}");
    }

    let summary = stop_unblocking_on_each_node(&cluster, &stop, run).await;
    assert_eq!(summary.dead_lettered, 1, "{summary:?}");
    let twice: i64 =
        t.db.fetch_one("SELECT COUNT(*) FROM orders WHERE hits > 1", ())
            .await
            .unwrap();
    assert_eq!(twice, 0);
    t.cleanup().await;
}

/// The outbox relay on the cluster: rows for two streams on two masters
/// are sent once each (its dedup script's keys are in each stream's slot),
/// and a second pass sends nothing.
async fn the_outbox_relay_sends_to_streams_on_different_masters(backend: Backend) {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let streams = cluster.names_on_masters(&common::unique("cl_outbox"), 2);
    let redis = cluster.redis();
    let t = common::TestDb::new(backend).await;
    safesync::queue::ensure_outbox(&t.db).await.unwrap();
    let mut tx = t.db.begin().await.unwrap();
    for (i, s) in streams.iter().enumerate() {
        let stream: Stream<OrderPlaced> = Stream::new(leak(s));
        for n in 1..=5 {
            let order_id = i64::try_from(i).unwrap() * 10 + n;
            stream
                .send_in(&mut tx, &OrderPlaced { order_id })
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
    let relay = safesync::Relay::new(t.db.clone(), redis.clone());
    assert_eq!(relay.run_once().await.unwrap().sent, 10);
    assert_eq!(relay.run_once().await.unwrap().sent, 0);
    let client = redis.cluster_client().unwrap();
    let mut c = client.get_async_connection().await.unwrap();
    for s in &streams {
        let n: u64 = safesync::redis::cmd("XLEN")
            .arg(s)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 5, "{s}");
    }
    t.cleanup().await;
}

/// SQLite too, for the runs with three worker processes (each process
/// its own pool on the file).
mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_effect_once_with_three_worker_processes() {
        super::every_effect_once_with_three_worker_processes(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_master_killed_mid_run_fails_over_and_nothing_is_applied_twice() {
        super::a_master_killed_mid_run_fails_over_and_nothing_is_applied_twice(
            super::Backend::Sqlite,
        )
        .await;
    }
}

on_servers!(
    every_effect_once_with_three_worker_processes,
    a_master_killed_mid_run_fails_over_and_nothing_is_applied_twice,
    dead_letters_replay_and_health_on_the_cluster,
    the_outbox_relay_sends_to_streams_on_different_masters,
);
