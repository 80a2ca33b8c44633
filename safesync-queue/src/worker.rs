//! The worker: its settings, its run, and what it reports at the end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Client;
use safesync_core::{Db, Error, Result, RetryPolicy};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ack::{self, AckMsg};
use crate::config::Config;
use crate::conn::{self, COMMAND_TIMEOUT, SideConn};
use crate::consumer;
use crate::handler::{self, ErasedHandler, IntoHandler};
use crate::keys::replay_key;
use crate::ledger::{self, MAX_NAME_LEN};
use crate::metrics::{Labelled, QueueMetrics};

/// Consumes streams with typed handlers: read → decode → transaction
/// (ledger row + handler) → commit → acknowledge for a [`Handler`](crate::Handler);
/// read → decode → handler → acknowledge for a
/// [`PlainHandler`](crate::PlainHandler) (no transaction, no ledger: at-least-once
/// delivery, the handler must be idempotent).
///
/// Built with [`Worker::new`] and the setters below, started with
/// [`Worker::run`] (until a token is cancelled) or
/// [`Worker::run_until_signal`] (until SIGTERM or Ctrl-C).
///
/// - **Effectively once.** The entry's id goes into the ledger table
///   `safesync_queue_ledger` in the handler's own transaction, so an entry
///   whose transaction committed but whose acknowledgement was lost is
///   recognised when it comes again, and only acknowledged.
/// - **Retries in place.** A handler's retryable error (a version
///   conflict, a deadlock or serialisation failure, SQLite busy: what
///   [`RetryPolicy`] retries) is retried at once, in a new transaction
///   that records the ledger row again, with back-off and jitter, under
///   [`retry`](Worker::retry) (default [`RetryPolicy::default()`]); only
///   when the policy gives up does the delivery fail.
/// - **Timeout.** A delivery that takes longer than
///   [`handler_timeout`](Worker::handler_timeout) is cancelled, its
///   transaction rolled back, and it fails with "timed out after …".
/// - **Failures.** A handler's `Err` or panic rolls back and leaves the
///   entry pending; after [`claim_idle`](Worker::claim_idle) it is claimed
///   (`XAUTOCLAIM`) and delivered again. An entry whose payload cannot be
///   decoded, or whose handler failed on its
///   [`max_deliveries`](Worker::max_deliveries)-th delivery, moves to
///   the group's own dead letters, `{<stream>}:dead:<group>`, with the
///   reason (at most 1 KiB; see [`dead_letters`](crate::dead_letters)) and is
///   acknowledged. Each handler also reads its group's replay stream
///   `{<stream>}:replay:<group>`, where
///   [`replay_dead_letter`](crate::replay_dead_letter) puts dead letters
///   back for that group alone.
/// - **Connections.** The blocking read has a connection of its own whose
///   client-side deadline is the block time plus a margin, with TCP
///   keepalive; after a timeout or reconnect the worker first reads its own
///   pending entries again. A deleted consumer group is created again, with
///   back-off, after the last entry this worker saw delivered to it (from
///   the start of the stream only when it saw none, with a warning), so
///   what was handled is not run again; entries pending in the deleted
///   group are not delivered again.
/// - **Stop.** Cancelling the token ends the blocking read at once
///   (`CLIENT UNBLOCK`), lets running handlers finish within
///   [`drain_timeout`](Worker::drain_timeout), acknowledges what committed
///   and returns a [`Summary`].
///
/// ```no_run
/// # use safesync_core::{Db, Error, Tx};
/// # use safesync_queue::{Handler, Worker, __private::BoxFuture};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { order_id: i64 }
/// # #[allow(non_camel_case_types)] struct bill;
/// # impl Handler for bill {
/// #     type Payload = OrderPlaced;
/// #     fn stream(&self) -> &'static str { "orders" }
/// #     fn group(&self) -> &'static str { "billing" }
/// #     fn handle<'t>(&'t self, _tx: &'t mut Tx<'_>, _msg: OrderPlaced) -> BoxFuture<'t, Result<(), Error>> {
/// #         Box::pin(async { Ok(()) })
/// #     }
/// # }
/// # async fn demo() -> Result<(), Error> {
/// use std::time::Duration;
///
/// let db = Db::connect("sqlite:app.db").await?;
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let summary = Worker::new(db, redis)
///     .handle(bill)
///     .concurrency(16)
///     .claim_idle(Duration::from_secs(60))
///     .run_until_signal()
///     .await?;
/// println!("{summary:?}");
/// # Ok(()) }
/// ```
#[must_use = "a worker does nothing until `run` or `run_until_signal` is awaited"]
pub struct Worker {
    db: Db,
    redis: Client,
    handlers: Vec<Arc<dyn ErasedHandler>>,
    config: Config,
    metrics: Option<QueueMetrics>,
    skip_acks: u64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let handlers: Vec<String> = self
            .handlers
            .iter()
            .map(|h| format!("{}/{}", h.stream(), h.group()))
            .collect();
        f.debug_struct("Worker")
            .field("handlers", &handlers)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a [`Worker::run`] did, counted over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Entries delivered to this worker: new, re-read after a reconnect,
    /// or claimed.
    pub read: u64,
    /// Handler runs whose transaction committed, or, for a
    /// [`PlainHandler`](crate::PlainHandler), that returned `Ok`.
    pub processed: u64,
    /// Transactions committed for handlers: one per entry, or one per
    /// group with
    /// [`messages_per_transaction`](Worker::messages_per_transaction).
    pub transactions: u64,
    /// Entries the ledger showed as already processed (an earlier
    /// delivery committed, its acknowledgement was lost): acknowledged
    /// without running the handler.
    pub duplicates: u64,
    /// `XACK`s that acknowledged an entry (after a commit, a dead letter or
    /// a trim).
    pub acked: u64,
    /// `XACK`s answered 0: someone else had acknowledged the entry.
    pub already_acked: u64,
    /// Deliveries that failed (an error the retry policy did not retry or
    /// gave up on, a panic, a timeout, or a failed begin, ledger write or
    /// commit): rolled back (if in a transaction), not acknowledged.
    pub failed: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries claimed from idle consumers (this one included).
    pub claimed: u64,
    /// Pending entries found deleted or trimmed away, then acknowledged.
    pub trimmed: u64,
    /// Handlers still running at the drain deadline: cancelled, rolled
    /// back, left pending.
    pub abandoned: u64,
    /// Attempts beyond the first within one delivery: retryable errors
    /// retried in place, each in a new transaction (see
    /// [`Worker::retry`]).
    pub retried: u64,
    /// Deliveries cut off by the handler timeout (also counted in
    /// `failed`; see [`Worker::handler_timeout`]).
    pub timed_out: u64,
}

/// Counters behind [`Summary`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) read: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) transactions: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) already_acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) claimed: AtomicU64,
    pub(crate) trimmed: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn summary(&self) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            read: get(&self.read),
            processed: get(&self.processed),
            transactions: get(&self.transactions),
            duplicates: get(&self.duplicates),
            acked: get(&self.acked),
            already_acked: get(&self.already_acked),
            failed: get(&self.failed),
            dead_lettered: get(&self.dead_lettered),
            claimed: get(&self.claimed),
            trimmed: get(&self.trimmed),
            abandoned: get(&self.abandoned),
            retried: get(&self.retried),
            timed_out: get(&self.timed_out),
        }
    }
}

/// What the consumer loops, the message tasks and the acker share.
pub(crate) struct Shared {
    pub(crate) db: Db,
    pub(crate) redis: Client,
    pub(crate) side: SideConn,
    pub(crate) config: Config,
    /// The handler of each read source, by index: every handler twice, for
    /// its stream and for its group's replay stream.
    pub(crate) handlers: Vec<Arc<dyn ErasedHandler>>,
    /// The read sources, by the same index.
    pub(crate) sources: Vec<Source>,
    /// The retry policy and timeout of each source's handler, by index.
    pub(crate) settings: Vec<HandlerSettings>,
    pub(crate) metrics: QueueMetrics,
    /// The metric series of each source's handler, by index.
    pub(crate) labels: Vec<Labelled>,
    pub(crate) stats: Stats,
    pub(crate) acks: mpsc::UnboundedSender<AckMsg>,
    /// One permit per running handler.
    pub(crate) limit: Arc<Semaphore>,
    /// The message tasks, waited for at the end.
    pub(crate) tracker: TaskTracker,
    /// Cancelled at the drain deadline: running handlers are dropped.
    pub(crate) abort: CancellationToken,
    /// `(handler, entry id)` of every message being handled here.
    pub(crate) in_flight: std::sync::Mutex<HashSet<crate::process::InFlightKey>>,
    /// The last handler error of entries left pending, for dead letters.
    pub(crate) last_errors: std::sync::Mutex<HashMap<(usize, String), String>>,
    /// Test hook: commits whose acknowledgement is skipped.
    pub(crate) skip_acks: AtomicU64,
}

/// What a handler runs under: its own retry policy and timeout, or the
/// worker's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandlerSettings {
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
}

/// A key a handler's entries are read from: its stream, or its group's
/// replay stream ([`replay_key`]).
pub(crate) struct Source {
    pub(crate) key: String,
    /// True for the replay stream.
    pub(crate) replayed: bool,
}

/// Each handler twice, with its stream and with its group's replay
/// stream as sources.
fn sources(handlers: Vec<Arc<dyn ErasedHandler>>) -> (Vec<Arc<dyn ErasedHandler>>, Vec<Source>) {
    let mut out = Vec::with_capacity(handlers.len() * 2);
    let mut sources = Vec::with_capacity(handlers.len() * 2);
    for h in handlers {
        sources.push(Source {
            key: h.stream().to_owned(),
            replayed: false,
        });
        sources.push(Source {
            key: replay_key(h.stream(), h.group()),
            replayed: true,
        });
        out.push(Arc::clone(&h));
        out.push(h);
    }
    (out, sources)
}

static WORKERS: AtomicU64 = AtomicU64::new(0);

/// `host-pid-n`: unique per worker in a process, readable in `XINFO`.
fn default_consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        WORKERS.fetch_add(1, Ordering::Relaxed)
    )
}

impl Worker {
    /// A worker on `db` and `redis` with no handlers yet, and defaults:
    /// concurrency 1, batch 16, block 5 s, claim idle 60 s, at most 5
    /// deliveries, drain timeout 30 s, ledger on, retries in place under
    /// [`RetryPolicy::default()`], handler timeout 30 s (or three
    /// quarters of `claim_idle` when shorter), consumer name `<host>-<pid>-<n>`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let worker = safesync_queue::Worker::new(db, redis).concurrency(8);
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn new(db: Db, redis: Client) -> Worker {
        Worker {
            db,
            redis,
            handlers: Vec::new(),
            config: Config::defaults(default_consumer_name()),
            metrics: None,
            skip_acks: 0,
        }
    }

    /// Adds a handler, a [`Handler`](crate::Handler) (run in a transaction
    /// with a ledger row) or a [`PlainHandler`](crate::PlainHandler) (run
    /// without one); see [`IntoHandler`]. Its stream and group come from
    /// the handler. Each handler is read by a loop of its own with its own
    /// connection.
    ///
    /// ```no_run
    /// # use safesync_core::{Error, Tx};
    /// # use safesync_queue::{Handler, __private::BoxFuture};
    /// # #[allow(non_camel_case_types)] struct bill;
    /// # impl Handler for bill {
    /// #     type Payload = i64;
    /// #     fn stream(&self) -> &'static str { "orders" }
    /// #     fn group(&self) -> &'static str { "billing" }
    /// #     fn handle<'t>(&'t self, _: &'t mut Tx<'_>, _: i64) -> BoxFuture<'t, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    /// # }
    /// # async fn demo(db: safesync_core::Db, redis: safesync_queue::redis::Client) {
    /// let worker = safesync_queue::Worker::new(db, redis).handle(bill);
    /// # let _ = worker; }
    /// ```
    pub fn handle<K, H: IntoHandler<K>>(mut self, handler: H) -> Worker {
        self.handlers.push(handler::erase(handler));
        self
    }

    /// How many handlers run at once, over all streams: 1 to 100,000
    /// (checked by [`run`](Worker::run), which fails with
    /// [`Error::Config`] naming a setting out of its range).
    pub fn concurrency(mut self, n: usize) -> Worker {
        self.config.concurrency = n;
        self
    }

    /// Most entries one read asks for (`COUNT`, 1 to 100,000; at most
    /// 1,000,000 with [`messages_per_transaction`](Worker::messages_per_transaction)
    /// multiplied in); a read never
    /// asks for more than there are free handler slots, plus
    /// [`read_ahead`](Worker::read_ahead).
    pub fn batch(mut self, n: usize) -> Worker {
        self.config.batch = n;
        self
    }

    /// How many entries a read may ask for beyond the free handler slots
    /// (default 0, at most 100,000; a read still asks for at most
    /// [`batch`](Worker::batch)).
    ///
    /// Entries read ahead are delivered to this worker and wait here for a
    /// slot; they start in the order read (a
    /// [`PlainHandler`](crate::PlainHandler)'s are shared out among the
    /// free slots, each slot handling its share in turn), and on stop they stay pending
    /// for the next run or a claim. It saves round trips when handlers are
    /// fast (a [`PlainHandler`](crate::PlainHandler) that only forwards a
    /// message, say): with concurrency 1, `batch(64).read_ahead(63)` reads
    /// 64 entries per `XREADGROUP` instead of one. Keep `read_ahead ×
    /// handler time / concurrency` far below
    /// [`claim_idle`](Worker::claim_idle), or waiting entries are claimed
    /// by other workers and handled twice.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// # let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let worker = safesync_queue::Worker::new(db, redis)
    ///     .concurrency(8)
    ///     .batch(64)
    ///     .read_ahead(56);
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn read_ahead(mut self, n: usize) -> Worker {
        self.config.read_ahead = n;
        self
    }

    /// Up to `n` new entries of a [`Handler`](crate::Handler) share one
    /// transaction (default 1: a transaction per entry; at most 10,000).
    /// Throughput rises
    /// with `n`, since the commit, the ledger write and the round trips of
    /// `BEGIN` and `COMMIT` are paid once per group; this is what makes a
    /// single worker outrun one-transaction-per-message code, above all on
    /// SQLite, whose commits are serial.
    ///
    /// The guarantees stay per entry. The handlers of a group run one after
    /// another in the shared transaction, which records every entry in the
    /// ledger in one statement and commits once; the entries are then
    /// acknowledged. If anything fails (a handler's error or panic, a
    /// ledger row already present, the commit) the whole transaction rolls
    /// back and each entry of the group is handled again alone, in its own
    /// transaction, with the usual redelivery and dead-letter rules: no
    /// effect is lost or doubled, but the handlers of that group run twice,
    /// so keep effects outside the database idempotent. Handlers of one
    /// group see each other's writes and hold their row locks until the
    /// shared commit; entries delivered again (claimed, or re-read after a
    /// reconnect) are always handled alone. [`PlainHandler`](crate::PlainHandler)s have no
    /// transaction and ignore this setting.
    ///
    /// The [`handler_timeout`](Worker::handler_timeout) bounds the shared
    /// transaction, and then each entry handled alone: a group of `n`
    /// whose handlers hang may take up to `n + 1` timeouts, so keep
    /// `n × handler_timeout` below [`claim_idle`](Worker::claim_idle) when
    /// handlers can be slow.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let worker = safesync_queue::Worker::new(db, redis)
    ///     .concurrency(8)
    ///     .messages_per_transaction(16);
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn messages_per_transaction(mut self, n: usize) -> Worker {
        self.config.per_transaction = n;
        self
    }

    /// How long a read waits for new entries (`BLOCK`, 1 ms to 1 hour). The
    /// wait is cut short when a claim is due, and at once on stop.
    pub fn block(mut self, d: Duration) -> Worker {
        self.config.block = d;
        self
    }

    /// After how long unacknowledged entries, of any consumer of the group
    /// (a failed handler, a crashed worker), are claimed and delivered
    /// again. Claims are checked every half of this. 1 ms to 7 days.
    pub fn claim_idle(mut self, d: Duration) -> Worker {
        self.config.claim_idle = d;
        self
    }

    /// How a [`Handler`](crate::Handler)'s retryable errors are retried
    /// within one delivery (default [`RetryPolicy::default()`]: 10 attempts
    /// within 30 s, back-off from 5 ms doubling to 1 s, full jitter) — the
    /// policy type, and the decision, of [`Db::retry`].
    ///
    /// A version conflict, deadlock, serialisation failure or SQLite busy
    /// (and a lock-wait timeout when the policy
    /// [opts in](RetryPolicy::retry_lock_timeouts)) — from the handler, the
    /// ledger write or the commit — rolls the transaction back, and the
    /// entry is handled again at once, after the back-off, in a new
    /// transaction that records the ledger row again and runs the handler
    /// on a fresh decoding of the payload. Only when the policy gives up
    /// does the delivery fail (then redelivered after
    /// [`claim_idle`](Worker::claim_idle), dead-lettered after
    /// [`max_deliveries`](Worker::max_deliveries)), with
    /// [`Error::RetriesExhausted`]'s message as the reason; other errors
    /// fail it at once. All attempts together are bounded by the
    /// [`handler_timeout`](Worker::handler_timeout). A handler's own
    /// [`retry_policy`](crate::Handler::retry_policy)
    /// (`#[queue_handler(retry = …)]`) overrides this;
    /// [`RetryPolicy::never()`] turns retries off. With
    /// [`messages_per_transaction`](Worker::messages_per_transaction), a
    /// failed shared transaction falls back to each entry alone, each with
    /// its own retries. [`PlainHandler`](crate::PlainHandler)s have no
    /// transaction to run again and are not retried in place.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// # let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// use std::time::Duration;
    /// use safesync_core::RetryPolicy;
    ///
    /// let worker = safesync_queue::Worker::new(db, redis)
    ///     .retry(RetryPolicy::default().max_attempts(20).max_delay(Duration::from_millis(200)));
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Worker {
        self.config.retry = policy;
        self
    }

    /// How long one delivery may take: a deadline from the handler's first
    /// run over its runs in all its attempts (see [`retry`](Worker::retry))
    /// and the back-off between them — or a
    /// [`PlainHandler`](crate::PlainHandler)'s run. (The first `BEGIN` — on
    /// SQLite the wait for the write lock —, the ledger write and `COMMIT`
    /// are bounded by the database's own timeouts.)
    /// Past it, the handler is cancelled (its future dropped at its next
    /// `.await`), the transaction rolled back — before another begins —
    /// and the delivery fails with the reason "timed out after …": the
    /// entry stays pending, is delivered again after
    /// [`claim_idle`](Worker::claim_idle) and dead-lettered after
    /// [`max_deliveries`](Worker::max_deliveries), like any failure.
    ///
    /// Default: 30 s, or three quarters of `claim_idle` when that is
    /// shorter (the last quarter is the margin for the rollback and the
    /// claim check). It
    /// bounds the whole delivery, not one attempt, so that a delivery never
    /// outlives `claim_idle` and no second consumer claims an entry still
    /// being handled: a timeout set here, or by a handler
    /// ([`Handler::timeout`](crate::Handler::timeout),
    /// `#[queue_handler(timeout = "…")]`), must be at least 1 ms and below
    /// `claim_idle`, or [`run`](Worker::run) fails with [`Error::Config`].
    /// A handler that blocks its thread without awaiting cannot be
    /// cancelled.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// # let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// use std::time::Duration;
    ///
    /// let worker = safesync_queue::Worker::new(db, redis)
    ///     .claim_idle(Duration::from_secs(120))
    ///     .handler_timeout(Duration::from_secs(60));
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn handler_timeout(mut self, d: Duration) -> Worker {
        self.config.handler_timeout = Some(d);
        self
    }

    /// Deliveries after which an entry whose handler keeps failing moves to
    /// the dead-letter stream (Redis's delivery counter; 1 to `u32::MAX`).
    pub fn max_deliveries(mut self, n: u64) -> Worker {
        self.config.max_deliveries = n;
        self
    }

    /// The consumer name in the groups. Two workers running at once must
    /// not share one; a restarted worker that keeps its name picks up its
    /// own pending entries at once instead of after `claim_idle`.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Worker {
        self.config.consumer = name.into();
        self
    }

    /// How often the worker refreshes the health gauges of its streams
    /// (and removes idle consumers, when asked to); default 15 s, 10 ms to
    /// 7 days.
    pub fn housekeeping_every(mut self, d: Duration) -> Worker {
        self.config.housekeeping_every = d;
        self
    }

    /// Removes consumers of the worker's groups that have been idle longer
    /// than `idle` and have nothing pending (see
    /// [`remove_idle_consumers`](crate::remove_idle_consumers)), at every
    /// housekeeping round. Off by default; 1 ms to 7 days.
    pub fn remove_idle_consumers_after(mut self, idle: Duration) -> Worker {
        self.config.remove_idle_consumers = Some(idle);
        self
    }

    /// How long a stop waits for running handlers before cancelling them
    /// (they roll back and stay pending); at most 7 days.
    pub fn drain_timeout(mut self, d: Duration) -> Worker {
        self.config.drain_timeout = d;
        self
    }

    /// Whether entries are recorded in the ledger (on by default). Off, an
    /// entry whose acknowledgement was lost after its commit runs its
    /// handler again: handlers must then be idempotent themselves.
    pub fn ledger(mut self, on: bool) -> Worker {
        self.config.ledger = on;
        self
    }

    /// Where the worker records its metrics; [`QueueMetrics::global`] when
    /// not set.
    pub fn metrics(mut self, metrics: QueueMetrics) -> Worker {
        self.metrics = Some(metrics);
        self
    }

    /// Test hook: the acknowledgements of the first `n` commits are not
    /// sent, as if the worker died between commit and ack.
    #[doc(hidden)]
    pub fn fail_before_ack_for_tests(mut self, n: u64) -> Worker {
        self.skip_acks = n;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.handlers.is_empty() {
            return Err(Error::Config(
                "a Worker needs at least one handler: call `.handle(h)`".to_owned(),
            ));
        }
        self.config.check()?;
        let mut seen = HashSet::new();
        for h in &self.handlers {
            for (what, name) in [("stream", h.stream()), ("group", h.group())] {
                if name.is_empty() || name.len() > MAX_NAME_LEN {
                    return Err(Error::Config(format!(
                        "the {what} name `{name}` of a handler must be 1 to {MAX_NAME_LEN} bytes long"
                    )));
                }
            }
            if let Some(timeout) = h.timeout() {
                let setting = format!(
                    "the timeout of the handler of `{}`/`{}`",
                    h.stream(),
                    h.group()
                );
                self.config.check_timeout(&setting, timeout)?;
            }
            if !seen.insert((h.stream(), h.group())) {
                return Err(Error::Config(format!(
                    "two handlers consume stream `{}` in group `{}`; give each its own group",
                    h.stream(),
                    h.group()
                )));
            }
        }
        Ok(())
    }

    /// Runs until `stop` is cancelled, then drains and returns what it did.
    ///
    /// Fails at once, without consuming, when the settings are invalid
    /// ([`Error::Config`] naming the setting and its allowed range), the
    /// ledger table cannot be created (only needed, and created, when a
    /// [`Handler`](crate::Handler) is among the handlers), Redis cannot be reached (within
    /// 5 s to connect and 10 s to answer) or a group cannot be created.
    /// Once running, connection losses are retried with back-off, not
    /// returned.
    ///
    /// # Panics
    ///
    /// Only with a bug of the worker's own: when one of its read loops
    /// panics, the others stop, running handlers drain, and `run` resumes
    /// that panic instead of returning `Ok` with a stream no longer read. (A
    /// handler's panic is a failed delivery, not a panic of `run`.)
    ///
    /// ```no_run
    /// # use safesync_core::{Db, Error, Tx};
    /// # use safesync_queue::{Handler, Worker, __private::BoxFuture};
    /// # #[allow(non_camel_case_types)] struct bill;
    /// # impl Handler for bill {
    /// #     type Payload = i64;
    /// #     fn stream(&self) -> &'static str { "orders" }
    /// #     fn group(&self) -> &'static str { "billing" }
    /// #     fn handle<'t>(&'t self, _: &'t mut Tx<'_>, _: i64) -> BoxFuture<'t, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    /// # }
    /// # async fn demo(db: Db, redis: safesync_queue::redis::Client) -> Result<(), Error> {
    /// use safesync_queue::CancellationToken;
    ///
    /// let stop = CancellationToken::new();
    /// let worker = tokio::spawn(Worker::new(db, redis).handle(bill).run(stop.clone()));
    /// // … later:
    /// stop.cancel();
    /// let summary = worker.await.expect("worker task")?;
    /// println!("processed {}", summary.processed);
    /// # Ok(()) }
    /// ```
    pub async fn run(self, stop: CancellationToken) -> Result<Summary> {
        self.validate()?;
        let transactional = self
            .handlers
            .iter()
            .any(|h| matches!(h.body(), handler::Body::Tx(_)));
        // A worker of plain handlers only never touches the database.
        if self.config.ledger && transactional {
            ledger::ensure_ledger(&self.db).await?;
        }
        let side = SideConn::connect(
            &self.redis,
            format!("safesync-side-{}", self.config.consumer),
        )
        .await?;
        let (handlers, sources) = sources(self.handlers);
        let settings = handlers
            .iter()
            .map(|h| HandlerSettings {
                retry: h.retry_policy().unwrap_or(self.config.retry),
                timeout: h.timeout().unwrap_or_else(|| self.config.handler_timeout()),
            })
            .collect();
        for (h, source) in handlers.iter().zip(&sources) {
            create_group(&side, &source.key, h.group(), "0").await?;
        }
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let metrics = self.metrics.unwrap_or_else(QueueMetrics::global);
        let labels = handlers
            .iter()
            .map(|h| metrics.labelled(h.stream(), h.group()))
            .collect();
        let shared = Arc::new(Shared {
            db: self.db,
            redis: self.redis,
            side,
            limit: Arc::new(Semaphore::new(self.config.concurrency)),
            config: self.config,
            handlers,
            sources,
            settings,
            metrics,
            labels,
            stats: Stats::default(),
            acks,
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            in_flight: std::sync::Mutex::new(HashSet::new()),
            last_errors: std::sync::Mutex::new(HashMap::new()),
            skip_acks: AtomicU64::new(self.skip_acks),
        });
        tracing::info!(
            consumer = %shared.config.consumer,
            handlers = shared.handlers.len() / 2,
            concurrency = shared.config.concurrency,
            "safesync queue worker started"
        );
        let acker = tokio::spawn(ack::run(Arc::clone(&shared), ack_rx));
        let housekeeper = tokio::spawn(housekeep(Arc::clone(&shared), stop.clone()));
        // A loop that panics stops the others (never the caller's token),
        // and the run ends in that panic once drained: never `Ok` with a
        // stream silently not consumed.
        let stop = stop.child_token();
        let mut loops = JoinSet::new();
        for index in 0..shared.handlers.len() {
            loops.spawn(consumer::consume(Arc::clone(&shared), index, stop.clone()));
        }
        let mut panicked = None;
        while let Some(done) = loops.join_next().await {
            if let Some(panic) = panic_of(done) {
                tracing::error!("a safesync queue consumer loop panicked: stopping the worker");
                stop.cancel();
                panicked.get_or_insert(panic);
            }
        }
        housekeeper.abort();
        drain(&shared).await;
        let (flushed, wait) = oneshot::channel();
        if shared.acks.send(AckMsg::Stop(flushed)).is_ok() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT * 3, wait).await;
        }
        acker.abort();
        if let Some(panic) = panic_of(acker.await) {
            panicked.get_or_insert(panic);
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        let summary = shared.stats.summary();
        tracing::info!(?summary, "safesync queue worker stopped");
        Ok(summary)
    }

    /// [`Worker::run`] until the process gets SIGTERM or SIGINT (Ctrl-C).
    ///
    /// ```no_run
    /// # use safesync_core::{Db, Error, Tx};
    /// # use safesync_queue::{Handler, Worker, __private::BoxFuture};
    /// # #[allow(non_camel_case_types)] struct bill;
    /// # impl Handler for bill {
    /// #     type Payload = i64;
    /// #     fn stream(&self) -> &'static str { "orders" }
    /// #     fn group(&self) -> &'static str { "billing" }
    /// #     fn handle<'t>(&'t self, _: &'t mut Tx<'_>, _: i64) -> BoxFuture<'t, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    /// # }
    /// # async fn demo(db: Db, redis: safesync_queue::redis::Client) -> Result<(), Error> {
    /// let summary = Worker::new(db, redis).handle(bill).run_until_signal().await?;
    /// # let _ = summary;
    /// # Ok(()) }
    /// ```
    pub async fn run_until_signal(self) -> Result<Summary> {
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(cancel_on_signal(stop.clone()));
        let result = self.run(stop).await;
        watcher.abort();
        result
    }
}

/// The panic of a task that ended in one; `None` when it returned or was
/// cancelled.
fn panic_of<T>(
    done: std::result::Result<T, tokio::task::JoinError>,
) -> Option<Box<dyn std::any::Any + Send>> {
    done.err().and_then(|e| e.try_into_panic().ok())
}

/// Refreshes the health gauges and removes idle consumers, every
/// `housekeeping_every`, until `stop`. Failures are logged, never fatal.
async fn housekeep(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(shared.config.housekeeping_every) => {}
        }
        let streams = shared.handlers.iter().zip(&shared.sources);
        for (h, _) in streams.filter(|(_, s)| !s.replayed) {
            let (stream, group) = (h.stream(), h.group());
            match crate::health::health(&shared.redis, stream, group).await {
                Ok(health) => shared.metrics.record_health(stream, group, &health),
                Err(e) => tracing::debug!(stream, group, error = %e, "health refresh failed"),
            }
            if let Some(idle) = shared.config.remove_idle_consumers {
                match crate::health::remove_idle_consumers(&shared.redis, stream, group, idle).await
                {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(
                            stream,
                            group,
                            ?removed,
                            "removed idle consumers with nothing pending"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(stream, group, error = %e, "removing idle consumers failed");
                    }
                }
            }
        }
    }
}

/// Cancels `stop` on SIGTERM or SIGINT. A signal that cannot be listened
/// to is logged and ignored, never taken as a stop.
async fn cancel_on_signal(stop: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("stop signal: draining the safesync queue worker");
    stop.cancel();
}

/// Waits for running handlers up to the drain deadline, then cancels the
/// rest (they roll back and stay pending).
async fn drain(shared: &Shared) {
    shared.tracker.close();
    if tokio::time::timeout(shared.config.drain_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = shared.tracker.len(),
            "drain deadline passed: cancelling running handlers"
        );
        shared.abort.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), shared.tracker.wait()).await;
    }
}

/// `XGROUP CREATE stream group <from> MKSTREAM`: a new group starts after
/// entry `from` (`0`: the whole stream); an existing group is fine.
pub(crate) async fn create_group(
    side: &SideConn,
    stream: &str,
    group: &str,
    from: &str,
) -> Result<()> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(from)
        .arg("MKSTREAM");
    match side
        .query::<redis::Value>(&cmd, &format!("XGROUP CREATE `{group}` on `{stream}`"))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if conn::as_redis_error(&e).and_then(conn::code) == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::panic_of;

    #[tokio::test]
    async fn a_task_that_panicked_is_told_from_one_that_returned_or_was_cancelled() {
        let panicked = tokio::spawn(async { panic!("boom") }).await;
        let payload = panic_of(panicked).expect("the panic");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        assert!(panic_of(tokio::spawn(async {}).await).is_none());
        let pending = tokio::spawn(std::future::pending::<()>());
        pending.abort();
        assert!(
            panic_of(pending.await).is_none(),
            "a cancelled task did not panic"
        );
    }
}
