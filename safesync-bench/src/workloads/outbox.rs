//! W7 outbox: a producer transaction updates the worker's own row and
//! publishes one message; a consumer notes when each message arrives.
//!
//! - `raw`: `UPDATE`, commit, then `XADD` by hand (plain sqlx and redis);
//!   the consumer is a hand-written `XREAD` loop.
//! - `framework`: `UPDATE` through a safesync transaction, commit, then
//!   `Stream::send` (published after the commit: lost if the process dies
//!   between the two); the consumer is a `Worker` with a `PlainHandler`.
//! - `framework-outbox`: `UPDATE` and `Stream::send_in` in the same
//!   transaction, commit; the same `Worker`, with `relay_outbox(true)`,
//!   relays (woken by `NOTIFY` on PostgreSQL, polling every 100 ms
//!   elsewhere) and consumes.
//!
//! `ops/s` is the producers' transactions per second (each with its
//! message sent, or for the outbox, committed), with `workers` producer
//! tasks. `p50`/`p99` are end-to-end latencies from the producer's commit
//! returning to the consumer's handler, measured in a second phase:
//! [`PACED`] messages from one producer, each after a random pause of 0 to
//! 100 ms (so commits fall anywhere in a relay's poll) and each waited for
//! before the next. Verified: every message of both phases handled exactly
//! once, the rows' sum equal to the transactions, the outbox empty and
//! every row relayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use safesync::prelude::*;
use safesync::redis::aio::MultiplexedConnection;
use safesync::{CancellationToken, PlainHandler, SendOptions, Stream, Summary, Worker};
use serde::{Deserialize, Serialize};

use crate::driver::{Measured, Tally, drive};
use crate::env::{BeginWrite as _, BoxError, Env, RawPool, on_pool};
use crate::workloads::queue::GROUP;
use crate::workloads::{Checks, Outcome, Spec, Variant, int};

/// Messages of the paced latency phase (fewer with `--quick`).
pub(crate) const PACED: u64 = 100;
const PACED_QUICK: u64 = 20;

/// The longest the consumer may take to catch up after the last commit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The message.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    id: u64,
}

/// When each message was committed and handled, and how often handled.
struct Clock {
    base: Instant,
    committed: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    handled: Vec<AtomicU32>,
    total: AtomicU64,
    arrival: tokio::sync::Notify,
}

impl Clock {
    fn new(n: u64) -> Clock {
        let slots = |_| AtomicU64::new(0);
        Clock {
            base: Instant::now(),
            committed: (0..n).map(slots).collect(),
            arrived: (0..n).map(slots).collect(),
            handled: (0..n).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU64::new(0),
            arrival: tokio::sync::Notify::new(),
        }
    }

    /// Microseconds since the run began, never 0 (0 means "not yet").
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX) + 1
    }

    fn slot(id: u64) -> usize {
        usize::try_from(id).unwrap_or(usize::MAX)
    }

    fn committed(&self, id: u64) {
        if let Some(c) = self.committed.get(Self::slot(id)) {
            c.store(self.now(), Ordering::Relaxed);
        }
    }

    fn arrived(&self, id: u64) {
        let i = Self::slot(id);
        if let (Some(a), Some(h)) = (self.arrived.get(i), self.handled.get(i)) {
            let _ = a.compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed);
            h.fetch_add(1, Ordering::Relaxed);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        self.arrival.notify_waiters();
    }

    /// Commit → handler of message `id`, once it arrived.
    fn latency_us(&self, id: u64) -> Option<u32> {
        let i = Self::slot(id);
        let arrived = self.arrived.get(i)?.load(Ordering::Relaxed);
        let committed = self.committed.get(i)?.load(Ordering::Relaxed);
        (arrived != 0 && committed != 0)
            .then(|| u32::try_from(arrived.saturating_sub(committed)).unwrap_or(u32::MAX))
    }

    /// Waits until message `id` arrived, at most `limit`.
    async fn wait_for(&self, id: u64, limit: Duration) -> Result<(), BoxError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = self.arrival.notified();
            if self.latency_us(id).is_some() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, next).await.is_err() {
                return Err(format!("message {id} did not arrive within {limit:?}").into());
            }
        }
    }

    /// Messages among `ids` handled other than exactly once.
    fn not_once(&self, ids: impl Iterator<Item = u64>) -> usize {
        ids.filter(|&id| {
            self.handled
                .get(Self::slot(id))
                .is_none_or(|h| h.load(Ordering::Relaxed) != 1)
        })
        .count()
    }
}

/// The framework consumer's handler.
struct Arrivals {
    stream: &'static str,
    clock: Arc<Clock>,
}

impl PlainHandler for Arrivals {
    type Payload = Published;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        GROUP
    }

    fn handle(&self, msg: Published) -> safesync::__private::BoxFuture<'_, Result<(), Error>> {
        self.clock.arrived(msg.id);
        Box::pin(async { Ok(()) })
    }
}

/// One producer: its own Redis connection, and the variant's transaction.
struct Producer {
    variant: Variant,
    pool: RawPool,
    db: Db,
    conn: MultiplexedConnection,
    stream: Stream<Published>,
    raw_update: String,
}

impl Producer {
    async fn new(
        env: &Env,
        redis: &redis::Client,
        variant: Variant,
        stream: &'static str,
    ) -> Result<Producer, BoxError> {
        Ok(Producer {
            variant,
            pool: env.pool.clone(),
            db: env.db.clone(),
            conn: redis.get_multiplexed_async_connection().await?,
            stream: Stream::new(stream),
            raw_update: env.sql(UPDATE),
        })
    }

    /// One transaction on `row` publishing message `id`.
    async fn one(&mut self, row: i64, id: u64, clock: &Clock) -> Result<(), BoxError> {
        let msg = Published { id };
        match self.variant {
            Variant::Raw => {
                let update = &self.raw_update;
                on_pool!(&self.pool, |p| {
                    let mut tx = p.begin_write().await?;
                    sqlx::query(update).bind(row).execute(&mut *tx).await?;
                    tx.commit().await?;
                });
                clock.committed(id);
                let _: String = redis::cmd("XADD")
                    .arg(self.stream.name())
                    .arg("*")
                    .arg(safesync::queue::DATA_FIELD)
                    .arg(serde_json::to_string(&msg)?)
                    .query_async(&mut self.conn)
                    .await?;
            }
            Variant::FrameworkOutbox => {
                let mut tx = self.db.begin().await?;
                tx.execute_with(UPDATE, (row,)).await?;
                self.stream.send_in(&mut tx, &msg).await?;
                tx.commit().await?;
                clock.committed(id);
            }
            _ => {
                let mut tx = self.db.begin().await?;
                tx.execute_with(UPDATE, (row,)).await?;
                tx.commit().await?;
                clock.committed(id);
                self.stream
                    .send_on(&mut self.conn, &msg, &SendOptions::default())
                    .await?;
            }
        }
        Ok(())
    }
}

/// The producers' statement, `?` placeholders.
const UPDATE: &str = "UPDATE bench_outbox SET n = n + 1 WHERE id = ?";

pub(crate) async fn run(
    env: &Env,
    redis: &redis::Client,
    variant: Variant,
    spec: &Spec,
    quick: bool,
) -> Result<Outcome, BoxError> {
    let paced = if quick { PACED_QUICK } else { PACED };
    env.exec("CREATE TABLE bench_outbox (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .await?;
    let rows = u64::try_from(spec.workers).unwrap_or(u64::MAX).max(1);
    env.insert_rows(
        "bench_outbox",
        "id, n",
        (0..rows).map(|i| format!("({i}, 0)")),
    )
    .await?;
    safesync::queue::ensure_outbox(&env.db).await?;
    let stream: &'static str = Box::leak(format!("{}:outbox", env.id).into_boxed_str());
    let clock = Arc::new(Clock::new(spec.ops + paced));
    let stop = CancellationToken::new();
    let consumer = start_consumer(env, redis, variant, stream, &clock, &stop);
    let result = measure(env, redis, variant, spec, paced, stream, &clock).await;
    stop.cancel();
    let summary = consumer
        .await
        .map_err(|e| format!("the consumer panicked: {e}"))?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let () = redis::cmd("DEL").arg(stream).query_async(&mut conn).await?;
    let (measured, drain) = result?;
    let summary = summary?;
    let mut checks = Checks::default();
    let total = measured.ops + paced;
    let ids = (0..measured.ops).chain(spec.ops..spec.ops + paced);
    checks.eq(
        "messages handled other than once",
        int(clock.not_once(ids) as u64),
        0,
    );
    checks.eq(
        "messages handled",
        int(clock.total.load(Ordering::Relaxed)),
        int(total),
    );
    let sum = env
        .int(&format!("SELECT {} FROM bench_outbox", env.sum("n")))
        .await?;
    checks.eq("sum(n)", sum, int(total));
    if variant == Variant::FrameworkOutbox {
        let left = env
            .int("SELECT COUNT(*) FROM safesync_queue_outbox")
            .await?;
        checks.eq("outbox rows left", left, 0);
    }
    if let Some(s) = summary {
        checks.eq("worker processed", int(s.processed), int(total));
        checks.eq("worker failed", int(s.failed), 0);
        if variant == Variant::FrameworkOutbox {
            checks.eq("rows relayed", int(s.outbox.sent), int(total));
        }
    }
    checks.note(format!(
        "p50/p99: commit -> handler over {paced} paced messages; last message handled {:.1} ms after the last commit of the throughput phase",
        drain.as_secs_f64() * 1000.0
    ));
    Ok(Outcome { measured, checks })
}

/// The throughput phase, the wait for the consumer to catch up, then the
/// paced latency phase; the latencies go into the returned `Measured`.
async fn measure(
    env: &Env,
    redis: &redis::Client,
    variant: Variant,
    spec: &Spec,
    paced: u64,
    stream: &'static str,
    clock: &Arc<Clock>,
) -> Result<(Measured, Duration), BoxError> {
    let mut producers = Vec::with_capacity(spec.workers);
    for _ in 0..spec.workers {
        producers.push(Producer::new(env, redis, variant, stream).await?);
    }
    let mut measured = drive(spec.workers, spec.ops, spec.limit, |w, ops| {
        let producer = producers.pop();
        let clock = Arc::clone(clock);
        async move {
            let mut p = producer.ok_or("no producer")?;
            ops.ready().await;
            let mut tally = Tally::default();
            while let Some(i) = ops.claim() {
                let started = Instant::now();
                p.one(int(w as u64), i, &clock).await?;
                tally.record(started, 0);
            }
            Ok(tally)
        }
    })
    .await?;
    let last_commit = Instant::now();
    if measured.ops > 0 {
        for id in 0..measured.ops {
            clock.wait_for(id, DRAIN_TIMEOUT).await?;
        }
    }
    let drain = last_commit.elapsed();
    let mut p = Producer::new(env, redis, variant, stream).await?;
    let mut rng = fastrand::Rng::with_seed(0x0b0c);
    let mut lat = Vec::with_capacity(usize::try_from(paced).unwrap_or(0));
    for id in spec.ops..spec.ops + paced {
        tokio::time::sleep(Duration::from_micros(rng.u64(0..100_000))).await;
        p.one(0, id, clock).await?;
        clock.wait_for(id, Duration::from_secs(10)).await?;
        lat.extend(clock.latency_us(id));
    }
    lat.sort_unstable();
    measured.lat_us = lat;
    Ok((measured, drain))
}

/// The consumer, started before the producers: a `Worker` (with the relay
/// for `framework-outbox`) or the raw `XREAD` loop. Its summary, if a
/// `Worker`, when `stop` is cancelled.
fn start_consumer(
    env: &Env,
    redis: &redis::Client,
    variant: Variant,
    stream: &'static str,
    clock: &Arc<Clock>,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<Option<Summary>, BoxError>> {
    let clock = Arc::clone(clock);
    let stop = stop.clone();
    if variant == Variant::Raw {
        let redis = redis.clone();
        return tokio::spawn(async move {
            raw_consumer(&redis, stream, &clock, &stop).await?;
            Ok(None)
        });
    }
    let worker = Worker::new(env.db.clone(), redis.clone())
        .handle(Arrivals { stream, clock })
        .concurrency(8)
        .consumer_name(format!("{}-consumer", env.id))
        .relay_outbox(variant == Variant::FrameworkOutbox);
    tokio::spawn(async move { Ok(Some(worker.run(stop).await?)) })
}

/// `XREAD BLOCK` from the start of the stream until `stop`.
async fn raw_consumer(
    redis: &redis::Client,
    stream: &str,
    clock: &Clock,
    stop: &CancellationToken,
) -> Result<(), BoxError> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let mut last = "0".to_owned();
    while !stop.is_cancelled() {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(stream)
            .arg(&last)
            .query_async(&mut conn)
            .await?;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let data: String = entry
                    .get(safesync::queue::DATA_FIELD)
                    .ok_or("no data field")?;
                let msg: Published = serde_json::from_str(&data)?;
                clock.arrived(msg.id);
                last = entry.id;
            }
        }
    }
    Ok(())
}
