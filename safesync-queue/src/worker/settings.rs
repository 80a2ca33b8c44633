//! The worker's setters: each sets one field of its configuration, checked
//! when the worker runs.

use std::time::Duration;

use safesync_core::RetryPolicy;
#[cfg(doc)]
use safesync_core::{Db, Error};

use std::sync::Arc;

use super::Worker;
use super::failure::FailedDelivery;
use crate::metrics::QueueMetrics;
use crate::relay::Relay;

impl Worker {
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
    /// (at most 100,000; a read still asks for at most
    /// [`batch`](Worker::batch)). By default, one per slot
    /// ([`concurrency`](Worker::concurrency), at most `batch`) when twice
    /// the longest [`handler_timeout`](Worker::handler_timeout) is at most
    /// [`claim_idle`](Worker::claim_idle) — as with the defaults (30 s and
    /// 60 s) — and 0 otherwise: an entry read ahead waits at most one
    /// handler run for a slot, so it still ends within `claim_idle`.
    ///
    /// Entries read ahead are delivered to this worker and wait here for a
    /// slot; they start in the order read (a
    /// [`PlainHandler`](crate::PlainHandler)'s are shared out among the
    /// free slots, each slot handling its share in turn; while its runs
    /// lately all returned without waiting, in larger shares of about
    /// 100 µs of its work each, fewer tasks for the same entries, and as
    /// soon as one run waits the rest of its share is shared out again
    /// among the free slots), and on stop they stay pending
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
        self.config.read_ahead = Some(n);
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
    /// (a crashed worker, a stuck one), are claimed and delivered again.
    /// Claims are checked every half of this. 1 ms to 7 days. An entry
    /// whose delivery failed here comes back sooner, after
    /// [`redelivery_backoff`](Worker::redelivery_backoff).
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

    /// The delay before a failed entry is delivered again: `first` after
    /// its first delivery, doubling with each delivery, at most `max`,
    /// each drawn between half that and that (jitter). Default 1 s to
    /// 30 s (or a quarter and half of [`claim_idle`](Worker::claim_idle)
    /// when shorter). This worker claims the entry back itself when due
    /// (`XCLAIM`), so other entries are not held up meanwhile;
    /// `claim_idle` stays the rule for the entries of a consumer that
    /// died (this one's included, should it die before). `first` must be
    /// at least 1 ms and at most `max`, `max` at most `claim_idle`
    /// (checked by [`run`](Worker::run): [`Error::Config`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// # let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// use std::time::Duration;
    ///
    /// let worker = safesync_queue::Worker::new(db, redis)
    ///     .redelivery_backoff(Duration::from_millis(500), Duration::from_secs(20));
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn redelivery_backoff(mut self, first: Duration, max: Duration) -> Worker {
        self.config.redelivery = Some((first, max));
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
    /// housekeeping round, never the worker's own consumer (idle for up to
    /// `block` in every blocked read, but alive). Off by default; 1 ms to
    /// 7 days.
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

    /// Calls `hook` with every failed delivery (each one counted in
    /// [`Summary::failed`](super::Summary::failed)), for users who route
    /// failures elsewhere (an error tracker, an alert). The hook runs on
    /// the message's task after the entry is settled: keep it quick and
    /// non-blocking (hand the failure to a channel for slow work). A
    /// panicking hook is caught and logged; the worker goes on. A second
    /// call replaces the hook.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// # let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let worker = safesync_queue::Worker::new(db, redis).on_failure(|f| {
    ///     eprintln!("{}/{} {} failed: {}", f.stream, f.group, f.id, f.reason);
    /// });
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn on_failure(mut self, hook: impl Fn(&FailedDelivery) + Send + Sync + 'static) -> Worker {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Runs an outbox [`Relay`] on the worker's own database and Redis
    /// (with [`Relay::new`]'s defaults) as one more stage of the worker
    /// (off by default): it forwards what
    /// [`Stream::send_in`](crate::Stream::send_in) wrote once its
    /// transaction committed, starts with the worker (whose
    /// [`run`](Worker::run) then creates the outbox table, or fails at
    /// once) and stops with it. `false` removes a relay set before.
    /// What it sent is in [`Summary::outbox`](super::Summary::outbox).
    ///
    /// Relays may run in several workers at once: each stream's messages
    /// still go out once and in order (see [`Relay`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// # let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let worker = safesync_queue::Worker::new(db, redis).relay_outbox(true);
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn relay_outbox(mut self, on: bool) -> Worker {
        self.relay = on.then(|| Relay::new(self.db.clone(), self.redis.clone()));
        self
    }

    /// [`relay_outbox`](Worker::relay_outbox) with a relay of your own
    /// settings (batch, poll interval, dedup TTL; its database and Redis
    /// may differ from the worker's).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// # let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// use std::time::Duration;
    /// use safesync_queue::{Relay, Worker};
    ///
    /// let relay = Relay::new(db.clone(), redis.clone()).poll_interval(Duration::from_millis(20));
    /// let worker = Worker::new(db, redis).with_relay(relay);
    /// # let _ = worker;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub fn with_relay(mut self, relay: Relay) -> Worker {
        self.relay = Some(relay);
        self
    }

    /// Test hook: the acknowledgements of the first `n` commits are not
    /// sent, as if the worker died between commit and ack.
    #[doc(hidden)]
    pub fn fail_before_ack_for_tests(mut self, n: u64) -> Worker {
        self.skip_acks = n;
        self
    }
}
