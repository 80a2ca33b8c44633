//! The worker: a one-way pipeline of stages, each owning its state and
//! holding only a narrow handle to the next.
//!
//! ```text
//! read ──Delivery──▶ dispatch ──▶ run ──Outcome──▶ settle ──▶ ack
//! (one loop per      (slots,      (decode,         (ack, leave    (one task,
//!  route: own         in-flight    run_handler,     pending, or    batched
//!  pending, claims,   set, tasks)  retries, shared  dead letter)   XACKs)
//!  new entries)                    transactions)
//! ```
//!
//! - [`read`]: a loop per route (a handler's stream, or its group's replay
//!   stream) with its own connection; what it reads next is decided by
//!   [`read_plan`], apart from Redis.
//! - [`dispatch`]: the handler slots, the set of entries in flight and the
//!   message tasks; how many entries a task takes, for a plain handler
//!   paced by [`pace`] (how quick its runs are lately, recorded by run).
//! - [`run`]: decodes, and runs every handler through the one
//!   [`run_handler`](run::run_handler) (panics caught, the deadline
//!   applied): alone, retried in place, or several in a shared transaction
//!   with the fall-back to each alone.
//! - [`settle`]: the one place deciding acknowledge, leave pending or dead
//!   letter ([`settle::decide`], apart from Redis).
//! - [`ack`]: batches acknowledgements into one `XACK` per route and round
//!   trip.
//! - [`report`]: the one reporting path, feeding [`Summary`] and
//!   [`QueueMetrics`] together.
//! - [`failure`]: what a failed delivery shows: its [`FailedDelivery`],
//!   the last error per stream and group (in [`Summary`] and in Redis for
//!   [`health`](crate::health)) and the [`on_failure`](Worker::on_failure)
//!   hook, all called from settle.
//!
//! Configuration ([`config`]) and routes ([`route`]) are set once at `run`
//! and only read afterwards.
//!
//! # The stop protocol
//!
//! 1. The caller cancels its token (or a read loop panics: the worker then
//!    cancels its own child token, never the caller's).
//! 2. Each read loop sees the stop, and so does the outbox relay when the
//!    worker runs one ([`relay_outbox`](Worker::relay_outbox)): it ends
//!    after the batch under way (whose rows are sent and deleted, or stay
//!    for the next relay when its transaction rolls back), at once when
//!    idle. A blocking `XREADGROUP` is ended at once
//!    by `CLIENT UNBLOCK` from the side connection (dropped after a one
//!    second grace when that fails); a loop waiting for a free slot stops
//!    waiting. Entries read but not yet given a slot stay pending, for the
//!    next run or a claim. No read starts after this.
//! 3. The run waits for every read loop and the relay to end, and stops
//!    housekeeping.
//! 4. The dispatch stage closes its task tracker and waits up to
//!    [`drain_timeout`](Worker::drain_timeout) for the running message
//!    tasks. Each settles as usual: acknowledgements are queued, dead
//!    letters written, failures left pending.
//! 5. At the drain deadline it cancels the tasks still running: their
//!    handlers are dropped, their transactions roll back, the entries stay
//!    pending and count as `abandoned`. It waits up to 10 s more for them
//!    to unwind.
//! 6. The ack stage is asked to flush: it sends every acknowledgement
//!    queued before the request, answers, and ends (waiting at most three
//!    Redis command timeouts).
//! 7. A panic of a read loop, of the relay or of the ack task is resumed
//!    now; otherwise the run returns the [`Summary`].
//!
//! The relay is a stage apart from the pipeline: it feeds Redis, which the
//! read loops read like any other producer's entries.

mod ack;
mod commands;
mod config;
mod decode;
mod delivery;
mod dispatch;
mod failure;
mod housekeep;
mod pace;
mod read;
mod read_plan;
mod redeliver;
mod report;
mod route;
mod run;
mod settings;
mod settle;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::handle::Redis;
#[cfg(doc)]
use safesync_core::RetryPolicy;
use safesync_core::{Db, Error, Result};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::ack::Acks;
use self::config::Config;
use self::dispatch::Dispatcher;
pub use self::failure::FailedDelivery;
pub(crate) use self::failure::parse as parse_last_error;
use self::read::Reading;
use self::read_plan::Limits;
use self::redeliver::Redeliveries;
use self::report::Stats;
pub use self::report::Summary;
use self::run::Runner;
use self::settle::Settler;
use crate::conn::{COMMAND_TIMEOUT, SideConn};
use crate::handler::{self, ErasedHandler, IntoHandler};
use crate::keys;
use crate::ledger::{self, MAX_NAME_LEN};
use crate::metrics::QueueMetrics;
use crate::outbox::ensure_outbox;
use crate::relay::{Relay, RelaySummary};

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
///   entry pending; this worker delivers it again after a delay growing
///   with its delivery count ([`redelivery_backoff`](Worker::redelivery_backoff),
///   1 s doubling to 30 s by default), while other entries flow. Entries
///   of a consumer that died are claimed (`XAUTOCLAIM`) after
///   [`claim_idle`](Worker::claim_idle) and delivered again. An entry whose payload cannot be
///   decoded, whose handler rejected it for good
///   ([`Error::reject`]: no retry, no further delivery), or whose handler
///   failed on its
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
/// - **Outbox.** With [`relay_outbox(true)`](Worker::relay_outbox) the
///   worker also runs a [`Relay`], which forwards what
///   [`Stream::send_in`](crate::Stream::send_in) wrote once its
///   transaction committed, and stops with the worker.
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
    redis: Redis,
    handlers: Vec<Arc<dyn ErasedHandler>>,
    config: Config,
    metrics: Option<QueueMetrics>,
    on_failure: Option<failure::Hook>,
    skip_acks: u64,
    relay: Option<Relay>,
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
    pub fn new(db: Db, redis: impl Into<Redis>) -> Worker {
        Worker {
            db,
            redis: redis.into(),
            handlers: Vec::new(),
            config: Config::defaults(default_consumer_name()),
            metrics: None,
            on_failure: None,
            skip_acks: 0,
            relay: None,
        }
    }

    /// Adds a handler, a [`Handler`](crate::Handler) (run in a transaction
    /// with a ledger row) or a [`PlainHandler`](crate::PlainHandler) (run
    /// without one); see [`IntoHandler`]. Its stream and group come from
    /// the handler, or from a [`Routed`](crate::Routed) wrapping it
    /// (`bill.on(stream, group)`) to run it on names chosen at runtime.
    /// Each handler is read by a loop of its own with its own
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
    /// # async fn demo(db: safesync_core::Db, redis: safesync_queue::Redis) {
    /// let worker = safesync_queue::Worker::new(db, redis).handle(bill);
    /// # let _ = worker; }
    /// ```
    pub fn handle<K, H: IntoHandler<K>>(mut self, handler: H) -> Worker {
        self.handlers.push(handler::erase(handler));
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
        self.check_own_keys()
    }

    /// No handler's stream is one of the keys kept beside a stream (its
    /// dead letters, replay stream, last error): shaped like one, or one
    /// of another handler's of this worker.
    fn check_own_keys(&self) -> Result<()> {
        let mut own = std::collections::HashMap::new();
        for h in &self.handlers {
            for (key, what) in keys::own_keys(h.stream(), h.group()) {
                own.entry(key).or_insert((what, h.stream(), h.group()));
            }
        }
        for h in &self.handlers {
            let (stream, group) = (h.stream(), h.group());
            if let Some(what) = keys::own_key_kind(stream) {
                return Err(Error::Config(format!(
                    "the stream name `{stream}` of the handler in group `{group}` is shaped like \
                     the `{what}` key kept beside a stream (`{{stream}}:{what}:…`); a worker \
                     does not read a stream's own keys: choose another name"
                )));
            }
            if let Some((what, of, of_group)) = own.get(stream) {
                return Err(Error::Config(format!(
                    "the stream name `{stream}` of the handler in group `{group}` is the \
                     {what} key of stream `{of}` in group `{of_group}`; a worker does not \
                     read a stream's own keys: choose another name"
                )));
            }
        }
        Ok(())
    }

    /// Runs until `stop` is cancelled, then drains and returns what it did.
    ///
    /// Fails at once, without consuming, when the settings are invalid
    /// ([`Error::Config`] naming the setting and its allowed range), a
    /// handler's names cannot work (empty or over 255 bytes, a stream named
    /// like a stream's own dead-letter or replay key, two handlers on one
    /// stream and group: [`Error::Config`] naming them), the
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
    /// # async fn demo(db: Db, redis: safesync_queue::Redis) -> Result<(), Error> {
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
        self.ensure_tables().await?;
        let config = self.config;
        let side = Arc::new(
            SideConn::connect(&self.redis, format!("safesync-side-{}", config.consumer)).await?,
        );
        let metrics = self.metrics.unwrap_or_else(QueueMetrics::global);
        let stats = Arc::new(Stats::default());
        let pairs: Vec<_> = self
            .handlers
            .iter()
            .map(|h| (h.stream().to_owned(), h.group().to_owned()))
            .collect();
        let routes = route::routes(self.handlers, &config, &metrics, &stats);
        let longest_timeout = routes
            .iter()
            .map(|r| r.timeout)
            .max()
            .unwrap_or_else(|| config.handler_timeout());
        let (first, max) = config.redelivery();
        let redeliveries = Arc::new(Redeliveries::new(routes.len(), first, max));
        for r in &routes {
            commands::create_group(&side, &r.key, r.group(), "0").await?;
        }
        // The stages, last first: each gets a handle to the next.
        let (acks, acker) = Acks::start(Arc::clone(&side), self.skip_acks);
        let acker = tokio::spawn(acker);
        let settler = Settler::new(
            Arc::clone(&side),
            config.consumer.clone(),
            config.max_deliveries,
            acks.clone(),
            self.on_failure,
            Arc::clone(&redeliveries),
        );
        let runner = Runner::new(self.db, config.ledger, settler);
        let dispatch = Dispatcher::new(config.concurrency, runner);
        let reading = Arc::new(Reading {
            redis: self.redis.clone(),
            side,
            consumer: config.consumer.clone(),
            limits: Limits {
                batch: config.batch,
                read_ahead: config.read_ahead(longest_timeout),
                per_transaction: config.per_transaction,
                block: config.block,
                claim_idle: config.claim_idle,
            },
            dispatch: dispatch.clone(),
            redeliveries,
        });
        tracing::info!(
            consumer = %config.consumer,
            handlers = pairs.len(),
            concurrency = config.concurrency,
            "safesync queue worker started"
        );
        let housekeeper = tokio::spawn(housekeep::housekeep(
            self.redis,
            metrics,
            pairs,
            config.housekeeping_every,
            config.remove_idle_consumers,
            config.consumer.clone(),
            stop.clone(),
        ));
        // Step 1: a loop that panics stops the others (never the caller's
        // token), and the run ends in that panic once drained (step 7):
        // never `Ok` with a stream silently not consumed.
        let stop = stop.child_token();
        let mut loops = JoinSet::new();
        for r in routes {
            loops.spawn(read::read_loop(Arc::clone(&reading), r, stop.clone()));
        }
        let relayed = spawn_relay(&mut loops, self.relay, &stop);
        // Steps 2 and 3.
        let mut panicked = None;
        while let Some(done) = loops.join_next().await {
            if let Some(panic) = panic_of(done) {
                tracing::error!("a safesync queue consumer loop panicked: stopping the worker");
                stop.cancel();
                panicked.get_or_insert(panic);
            }
        }
        housekeeper.abort();
        // Steps 4 and 5.
        dispatch.drain(config.drain_timeout).await;
        // Step 6.
        acks.flush(COMMAND_TIMEOUT * 3).await;
        acker.abort();
        if let Some(panic) = panic_of(acker.await) {
            panicked.get_or_insert(panic);
        }
        // Step 7.
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        let mut summary = stats.summary();
        if let Ok(r) = relayed.lock() {
            summary.outbox = *r;
        }
        tracing::info!(?summary, "safesync queue worker stopped");
        Ok(summary)
    }

    /// Creates the tables the run needs when missing: the ledger (a worker
    /// of plain handlers only never touches the database) and, with a
    /// relay, the outbox.
    async fn ensure_tables(&self) -> Result<()> {
        let transactional = self
            .handlers
            .iter()
            .any(|h| matches!(h.body(), handler::Body::Tx(_)));
        if self.config.ledger && transactional {
            ledger::ensure_ledger(&self.db).await?;
        }
        if let Some(relay) = &self.relay {
            ensure_outbox(relay.db()).await?;
        }
        Ok(())
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
    /// # async fn demo(db: Db, redis: safesync_queue::Redis) -> Result<(), Error> {
    /// let summary = Worker::new(db, redis).handle(bill).run_until_signal().await?;
    /// # let _ = summary;
    /// # Ok(()) }
    /// ```
    pub async fn run_until_signal(self) -> Result<Summary> {
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(housekeep::cancel_on_signal(stop.clone()));
        let result = self.run(stop).await;
        watcher.abort();
        result
    }
}

/// Spawns the outbox relay, when there is one, among the read loops: it
/// stops and panics like one of them. Returns where it leaves what it sent.
fn spawn_relay(
    loops: &mut JoinSet<()>,
    relay: Option<Relay>,
    stop: &CancellationToken,
) -> Arc<std::sync::Mutex<RelaySummary>> {
    let relayed = Arc::new(std::sync::Mutex::new(RelaySummary::default()));
    if let Some(relay) = relay {
        let (relayed, stop) = (Arc::clone(&relayed), stop.clone());
        loops.spawn(async move {
            let done = relay.relay_until(stop).await;
            if let Ok(mut r) = relayed.lock() {
                *r = done;
            }
        });
    }
    relayed
}

/// The panic of a task that ended in one; `None` when it returned or was
/// cancelled.
fn panic_of<T>(
    done: std::result::Result<T, tokio::task::JoinError>,
) -> Option<Box<dyn std::any::Any + Send>> {
    done.err().and_then(|e| e.try_into_panic().ok())
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
