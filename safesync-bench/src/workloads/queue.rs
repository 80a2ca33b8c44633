//! W5 queue-consume and W5q queue-only: a stream pre-filled with M
//! messages `{"order_id": i}`, consumed by `workers` concurrent handlers.
//!
//! W5's handler marks the order processed in the message's transaction
//! (`UPDATE bench_orders SET status = 'processed', hits = hits + 1`; the
//! `hits` column proves each order was processed exactly once); W5q's
//! handler does no database work and takes no transaction (a
//! `PlainHandler`: no `BEGIN`, no ledger row, no `COMMIT`), so W5q measures
//! the queue machinery alone; its worker reads up to 64 entries at a time
//! (`batch`, `read_ahead`), as the raw loop does. The framework is a
//! `Worker` running a `#[queue_handler]`, with its defaults (`framework`:
//! a transaction per message), its ledger off (`framework-noledger`, W5
//! only, to show the ledger's cost) or 16 messages per transaction
//! (`framework-16-per-tx`, W5 only); the raw baselines are in `queue_raw`.
//!
//! The framework's clock starts when its worker is spawned (its Redis
//! connections and group creation are timed; the ledger table is created
//! before, as migrations would) and stops when the last handler has
//! returned and nothing is pending, polled every millisecond. The raw
//! clocks start once their connections exist and stop at the last ack.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use safesync::prelude::*;
use safesync::{CancellationToken, Handler, PlainHandler, Summary, Worker, queue_handler};
use serde::{Deserialize, Serialize};

use crate::driver::Measured;
use crate::env::{BoxError, Env};
use crate::workloads::{Checks, Outcome, Spec, Variant, int, queue_raw};

/// The message.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OrderPlaced {
    pub(crate) order_id: i64,
}

/// Messages per transaction of the `framework-16-per-tx` variant.
const PER_TRANSACTION: usize = 16;

/// The longest a queue run may take before it is reported failed.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// The consumer group of every run (streams are unique per run).
pub(crate) const GROUP: &str = "bench";

/// W5's statement, `?` placeholders.
pub(crate) const MARK_SQL: &str =
    "UPDATE bench_orders SET status = 'processed', hits = hits + 1 WHERE id = ?";
const MARK_SQL_PG: &str =
    "UPDATE bench_orders SET status = 'processed', hits = hits + 1 WHERE id = $1";

/// Marks one order processed inside the handler's transaction, with a
/// bound parameter as the raw code does.
async fn mark_processed(tx: &mut Tx<'_>, order_id: i64) -> Result<(), Error> {
    let rows = if let Some(c) = tx.as_sqlite() {
        sqlx::query(MARK_SQL)
            .bind(order_id)
            .execute(c)
            .await?
            .rows_affected()
    } else if let Some(c) = tx.as_mysql() {
        sqlx::query(MARK_SQL)
            .bind(order_id)
            .execute(c)
            .await?
            .rows_affected()
    } else if let Some(c) = tx.as_postgres() {
        sqlx::query(MARK_SQL_PG)
            .bind(order_id)
            .execute(c)
            .await?
            .rows_affected()
    } else {
        return Err(Error::Config("no backend for the bench handler".into()));
    };
    if rows == 1 {
        Ok(())
    } else {
        Err(Error::not_found())
    }
}

/// W5's handler. The stream and group named here are replaced per run by
/// [`Renamed`].
#[queue_handler(stream = "safesync-bench:orders", group = "bench")]
async fn process_order(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
    mark_processed(tx, msg.order_id).await
}

/// W5q's handler: no database work, so no transaction either.
#[allow(clippy::unused_async)] // reason: `#[queue_handler]` takes an `async fn`
#[queue_handler(stream = "safesync-bench:orders", group = "bench")]
async fn ignore_order(_msg: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

/// How often each order's handler returned `Ok`.
pub(crate) struct Seen {
    counts: Vec<AtomicU32>,
    total: AtomicU64,
}

impl Seen {
    pub(crate) fn new(m: u64) -> Seen {
        Seen {
            counts: (0..m).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, order_id: i64) {
        if let Some(c) = usize::try_from(order_id)
            .ok()
            .and_then(|i| self.counts.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Orders handled other than exactly once.
    pub(crate) fn not_once(&self) -> usize {
        self.counts
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) != 1)
            .count()
    }
}

/// A `#[queue_handler]` on this run's own stream, counting what it handled.
/// `Handler::stream` is `&'static str`, so the run's name is leaked: a few
/// bytes per run.
struct Renamed<H> {
    inner: H,
    stream: &'static str,
    seen: Arc<Seen>,
}

impl<H: Handler<Payload = OrderPlaced>> Handler for Renamed<H> {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        GROUP
    }

    fn handle<'t>(
        &'t self,
        tx: &'t mut Tx<'_>,
        msg: OrderPlaced,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 't>> {
        let id = msg.order_id;
        let inner = self.inner.handle(tx, msg);
        Box::pin(async move {
            let r = inner.await;
            if r.is_ok() {
                self.seen.record(id);
            }
            r
        })
    }
}

impl<H: PlainHandler<Payload = OrderPlaced>> PlainHandler for Renamed<H> {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        GROUP
    }

    fn handle(
        &self,
        msg: OrderPlaced,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> {
        let id = msg.order_id;
        let inner = self.inner.handle(msg);
        Box::pin(async move {
            let r = inner.await;
            if r.is_ok() {
                self.seen.record(id);
            }
            r
        })
    }
}

/// The run's stream key.
pub(crate) fn stream_of(env: &Env) -> String {
    format!("{}:orders", env.id)
}

/// `XPENDING stream group`: entries delivered and not acknowledged.
pub(crate) async fn pending(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Result<usize, BoxError> {
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .query_async(conn)
        .await?;
    Ok(reply.count())
}

async fn fill(env: &Env, redis: &redis::Client, m: u64, db_work: bool) -> Result<(), BoxError> {
    if db_work {
        env.exec(
            "CREATE TABLE bench_orders (id BIGINT PRIMARY KEY, status VARCHAR(16) NOT NULL, \
             hits BIGINT NOT NULL)",
        )
        .await?;
        env.insert_rows(
            "bench_orders",
            "id, status, hits",
            (0..m).map(|i| format!("({i}, 'new', 0)")),
        )
        .await?;
    }
    let stream = stream_of(env);
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let mut next = 0;
    while next < m {
        let mut pipe = redis::pipe();
        for i in next..m.min(next + 1000) {
            let data = serde_json::to_string(&OrderPlaced { order_id: int(i) })?;
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg(safesync::queue::DATA_FIELD)
                .arg(data)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        next += 1000;
    }
    Ok(())
}

pub(crate) async fn run(
    env: &Env,
    redis: &redis::Client,
    variant: Variant,
    spec: &Spec,
    db_work: bool,
) -> Result<Outcome, BoxError> {
    let m = spec.ops;
    fill(env, redis, m, db_work).await?;
    let seen = Arc::new(Seen::new(m));
    let result = match variant {
        Variant::Framework | Variant::FrameworkNoLedger | Variant::FrameworkBatched => {
            framework(env, redis, spec, &seen, db_work, variant)
                .await
                .map(|(measured, summary)| (measured, Some(summary)))
        }
        Variant::RawSimple => queue_raw::simple(env, redis, spec, &seen)
            .await
            .map(|m| (m, None)),
        _ => queue_raw::tuned(env, redis, spec, &seen, db_work)
            .await
            .map(|m| (m, None)),
    };
    let verified = match result {
        Ok((measured, summary)) => verify(env, redis, m, db_work, &seen, summary)
            .await
            .map(|checks| Outcome { measured, checks }),
        Err(e) => Err(e),
    };
    let stream = stream_of(env);
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let () = redis::cmd("DEL")
        .arg(&stream)
        .arg(safesync::queue::dead_letter_key(&stream, GROUP))
        .arg(safesync::queue::replay_key(&stream, GROUP))
        .query_async(&mut conn)
        .await?;
    verified
}

async fn framework(
    env: &Env,
    redis: &redis::Client,
    spec: &Spec,
    seen: &Arc<Seen>,
    db_work: bool,
    variant: Variant,
) -> Result<(Measured, Summary), BoxError> {
    let m = spec.ops;
    let ledger = variant != Variant::FrameworkNoLedger;
    let per_transaction = if variant == Variant::FrameworkBatched {
        PER_TRANSACTION
    } else {
        1
    };
    let stream: &'static str = Box::leak(stream_of(env).into_boxed_str());
    if ledger && db_work {
        safesync::queue::ensure_ledger(&env.db).await?;
    }
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let stop = CancellationToken::new();
    let worker = Worker::new(env.db.clone(), redis.clone())
        .concurrency(spec.workers)
        .messages_per_transaction(per_transaction)
        .ledger(ledger)
        .consumer_name(format!("{}-worker", env.id));
    // W5q: reads as large as the raw loop's (its handler returns at once,
    // so entries read ahead of a free slot wait microseconds).
    let worker = if db_work {
        worker
    } else {
        worker
            .batch(queue_raw::MAX_BATCH)
            .read_ahead(queue_raw::MAX_BATCH)
    };
    let seen_by = Arc::clone(seen);
    let worker = if db_work {
        worker.handle(Renamed {
            inner: process_order,
            stream,
            seen: seen_by,
        })
    } else {
        worker.handle(Renamed {
            inner: ignore_order,
            stream,
            seen: seen_by,
        })
    };
    let cpu = crate::cpu::process_cpu();
    let start = Instant::now();
    let task = tokio::spawn(worker.run(stop.clone()));
    let (seconds, cpu) = loop {
        if seen.total() >= m && pending(&mut conn, stream).await? == 0 {
            break (start.elapsed().as_secs_f64(), crate::cpu::since(cpu));
        }
        if task.is_finished() {
            return Err(match task.await {
                Ok(Ok(s)) => format!("the worker stopped early: {s:?}").into(),
                Ok(Err(e)) => e.into(),
                Err(e) => e.into(),
            });
        }
        if start.elapsed() > RUN_TIMEOUT {
            stop.cancel();
            let _ = task.await;
            return Err(format!("not drained within {RUN_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    stop.cancel();
    let summary = task.await??;
    Ok((
        Measured {
            ops: m,
            seconds,
            cpu,
            ..Measured::default()
        },
        summary,
    ))
}

async fn verify(
    env: &Env,
    redis: &redis::Client,
    m: u64,
    db_work: bool,
    seen: &Seen,
    summary: Option<Summary>,
) -> Result<Checks, BoxError> {
    let mut checks = Checks::default();
    let stream = stream_of(env);
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(&mut conn)
        .await?;
    let group = groups
        .groups
        .iter()
        .find(|g| g.name == GROUP)
        .ok_or("the consumer group is missing")?;
    checks.eq("pending", int(group.pending as u64), 0);
    if let Some(read) = group.entries_read {
        checks.eq("entries read by the group", int(read as u64), int(m));
    }
    if let Some(lag) = group.lag {
        checks.eq("lag", int(lag as u64), 0);
    }
    if db_work {
        let processed = env
            .int("SELECT COUNT(*) FROM bench_orders WHERE status = 'processed'")
            .await?;
        let hits = env
            .int(&format!("SELECT {} FROM bench_orders", env.sum("hits")))
            .await?;
        let max = env
            .int("SELECT COALESCE(MAX(hits), 0) FROM bench_orders")
            .await?;
        checks.eq("orders processed", processed, int(m));
        checks.eq("sum(hits)", hits, int(m));
        checks.eq("max(hits)", max, 1);
    } else {
        checks.eq(
            "orders handled other than once",
            int(seen.not_once() as u64),
            0,
        );
    }
    if let Some(s) = summary {
        checks.eq("worker processed", int(s.processed), int(m));
        checks.eq("worker failed", int(s.failed), 0);
        checks.eq("worker dead-lettered", int(s.dead_lettered), 0);
        checks.eq("worker ledger duplicates", int(s.duplicates), 0);
    }
    Ok(checks)
}
