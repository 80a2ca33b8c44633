//! # safesync
//!
//! Concurrent backend code that never loses an update. Derive
//! [`Versioned`] (optimistic concurrency on a version column) or [`Locked`]
//! (`SELECT … FOR UPDATE` row locks) on a struct, and safesync writes the SQL
//! for SQLite, MySQL/MariaDB and PostgreSQL, checks your attributes at compile
//! time, and retries conflicts in a fresh transaction each time.
//!
//! ```
//! use safesync::prelude::*;
//!
//! #[derive(Debug, Clone, Versioned, Locked)]
//! #[safesync(table = "accounts")]
//! struct Account {
//!     #[safesync(key)]
//!     id: i64,
//!     owner: String,
//!     balance: i64,
//!     #[safesync(version)]
//!     version: i64,
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let db = Db::connect("sqlite::memory:").await?;
//! db.create_table::<Account>().await?; // CREATE TABLE IF NOT EXISTS, from the struct
//!
//! let mut tx = db.begin().await?;
//! Account { id: 1, owner: "ada".into(), balance: 0, version: 0 }.insert(&mut tx).await?;
//! tx.commit().await?;
//!
//! // Optimistic update: every attempt is a new transaction that re-reads.
//! db.retry(RetryPolicy::default(), |tx| Box::pin(async move {
//!     let mut a = Account::find(tx, &1).await?.ok_or_else(Error::not_found)?;
//!     a.balance += 10;
//!     a.update(tx).await
//! }))
//! .await?;
//!
//! // Row lock: held until commit.
//! let mut tx = db.begin().await?;
//! let a = Account::lock(&mut tx, &1).await?.expect("row exists");
//! assert_eq!((a.balance, a.version), (10, 1));
//! tx.commit().await?;
//! # Ok::<_, safesync::Error>(()) }).unwrap();
//! ```
//!
//! ## Features
//!
//! - `sqlite` (default): embedded SQLite.
//! - `mysql`: MariaDB (tested: 10.11; 10.6 is the first with `SKIP LOCKED`)
//!   and MySQL 8 (untested: only its error numbers and messages are
//!   handled, see the README's "Which servers are tested").
//! - `postgres`: PostgreSQL (tested: 15).
//! - `queue`: typed handlers on Redis Streams (`Worker`, `Stream`,
//!   dead letters, health), with an exactly-once effect through a ledger
//!   table in the handler's transaction.
//! - `tls`: TLS with rustls (the `ring` provider, webpki roots) to
//!   PostgreSQL (`sslmode=verify-full&sslrootcert=/path/ca.pem`),
//!   MySQL/MariaDB (`ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/ca.pem`) and
//!   Redis (`rediss://`, with a CA of your own through
//!   `queue::client_tls`). A certificate that cannot be verified is
//!   [`Error::TlsNotTrusted`].

pub use safesync_core::{
    AdvisoryLock, ColumnType, Db, DbOptions, Dialect, Error, Held, Inserted, LockOptions, LockWait,
    Locked, Mismatch, Params, Record, Result, RetryPolicy, Scalar, Select, SqlType, Table, Tx,
    Value, Versioned, advisory_key,
};
/// The derives share their names with the traits they implement.
pub use safesync_macros::{Locked, Versioned};

/// Runs an ordinary `async fn` in a transaction: commit on `Ok`, rollback
/// on `Err` or panic.
///
/// The fn takes the transaction first, `tx: &mut Tx<'_>`, and returns
/// `Result<T, Error>`. The attribute turns it into a fn of the same name,
/// visibility and generics that takes `db: &Db` in place of the
/// transaction and runs the body through [`Db::transaction`]:
///
/// - `#[transactional]`: one transaction; the arguments are moved in (any
///   error type `E: From<Error>` works).
/// - `#[transactional(retry)]`: [`Db::retry`] with
///   [`RetryPolicy::default()`]: every attempt is a new transaction that
///   runs the body again. Shared references (`&T`) are handed to each
///   attempt as they are; every other argument is cloned per attempt, so it
///   must be `Clone`.
/// - `#[transactional(retry = expr)]`: the same with the [`RetryPolicy`]
///   `expr`, evaluated once per call.
///
/// `&mut` arguments besides the transaction are rejected: a retried body
/// could not get them again. The future the fn returns is `Send` when its
/// arguments are, so it runs inside `tokio::spawn`.
///
/// ```
/// use safesync::prelude::*;
/// use safesync::transactional;
///
/// #[derive(Debug, Clone, Versioned)]
/// #[safesync(table = "accounts")]
/// struct Account {
///     #[safesync(key)]
///     id: i64,
///     owner: String,
///     balance: i64,
///     #[safesync(version)]
///     version: i64,
/// }
///
/// #[transactional]
/// async fn open(tx: &mut Tx<'_>, id: i64, owner: &str) -> Result<(), Error> {
///     let account = Account { id, owner: owner.to_owned(), balance: 0, version: 0 };
///     account.insert(tx).await
/// }
///
/// /// Re-reads and re-applies the deposit on a version conflict.
/// #[transactional(retry)]
/// async fn deposit(tx: &mut Tx<'_>, id: i64, amount: i64) -> Result<i64, Error> {
///     let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
///     a.balance += amount;
///     a.update(tx).await?;
///     Ok(a.balance)
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = Db::connect("sqlite::memory:").await?;
/// db.create_table::<Account>().await?;
///
/// open(&db, 1, "ada").await?;
/// assert_eq!(deposit(&db, 1, 10).await?, 10);
/// assert!(deposit(&db, 2, 10).await.is_err()); // no account 2: rolled back
/// # Ok::<_, safesync::Error>(()) }).unwrap();
/// ```
///
/// The body is compiled as a nested fn of the same name, so it cannot name
/// `Self` or the generics of an enclosing `impl`; use the type's name.
pub use safesync_macros::transactional;

/// Prometheus metrics of every [`Db`]: see [`Metrics`] for the names.
pub use safesync_core::Metrics;

/// The sqlx version safesync is built on, for queries of your own.
pub use safesync_core::__private::sqlx;

/// The prometheus version [`Metrics`] registers on, for the
/// [`Registry`](prometheus::Registry) you pass to [`Metrics::register`].
pub use safesync_core::__private::prometheus;

/// Turns `async fn name(tx: &mut Tx<'_>, msg: Payload) -> Result<(), Error>`
/// — or, for a handler that needs no database transaction,
/// `async fn name(msg: Payload) -> Result<(), Error>` — into a typed Redis
/// Streams handler (feature `queue`).
///
/// ```no_run
/// use safesync::prelude::*;
/// use safesync::queue_handler;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced {
///     order_id: i64,
/// }
///
/// #[queue_handler(stream = "orders", group = "billing")]
/// async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
///     tx.execute_with("UPDATE orders SET status = 'billed' WHERE id = ?", (msg.order_id,))
///         .await?;
///     Ok(())
/// }
///
/// /// No `tx`: no transaction, no ledger row. Must be idempotent itself.
/// #[queue_handler(stream = "orders", group = "mailer")]
/// async fn notify(msg: OrderPlaced) -> Result<(), Error> {
///     let _ = msg.order_id; // e.g. an HTTP call with an idempotency key
///     Ok(())
/// }
///
/// # async fn demo(db: Db, redis: safesync::redis::Client) -> Result<(), Error> {
/// bill::stream().send(&redis, &OrderPlaced { order_id: 7 }).await?; // only `OrderPlaced` compiles
/// safesync::Worker::new(db, redis)
///     .handle(bill)
///     .handle(notify)
///     .concurrency(16)
///     .run_until_signal()
///     .await?;
/// # Ok(()) }
/// ```
///
/// It expands to a unit struct `bill` (the handler value), with
/// `bill::stream()`, the typed stream, and `bill::call(tx, msg)` (or
/// `notify::call(msg)`), the original fn. The group defaults to the fn's
/// name.
///
/// - With `tx`, the struct implements [`Handler`]: each message runs in a
///   transaction that also records it in the ledger, so its database effect
///   is exactly once even when an acknowledgement is lost.
/// - Without `tx`, it implements [`PlainHandler`]: the
///   worker decodes, runs the fn and acknowledges — no transaction, no
///   ledger row. Delivery is still at least once (an error or a panic leaves
///   the message pending; it is retried after `claim_idle` and dead-lettered
///   after `max_deliveries`), but there is no exactly-once *effect*: a
///   message whose acknowledgement was lost runs again, so the fn must be
///   idempotent itself. A handler that writes to the database should take
///   the `tx`.
///
/// Options besides `stream` and `group`:
///
/// - `retry = expr` (a [`RetryPolicy`], evaluated when the worker
///   starts) or `retry = false` ([`RetryPolicy::never()`]): how this
///   handler's retryable errors (version conflicts, deadlocks, serialisation
///   failures, SQLite busy) are retried in place, each attempt in a new
///   transaction with a new ledger row. Without it, the worker's
///   [`Worker::retry`] (default [`RetryPolicy::default()`]). Only for
///   handlers with `tx`: a plain handler has no transaction to run again.
/// - `timeout = "30s"` (a whole number with `ms`, `s`, `m` or `h`, read at
///   compile time) or `timeout = expr` (a [`Duration`](std::time::Duration)):
///   how long one delivery may take, all attempts together; past it the
///   handler is cancelled, its transaction rolled back, and the delivery
///   fails with "timed out after …". Without it, the worker's
///   [`Worker::handler_timeout`] (default 30 s, or three quarters of
///   `claim_idle` when shorter). It must be below `claim_idle`, or [`Worker::run`] fails with
///   an [`Error::Config`].
///
/// ```no_run
/// # use safesync::prelude::*;
/// # use safesync::queue_handler;
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct OrderPlaced { order_id: i64 }
/// fn patient() -> RetryPolicy {
///     RetryPolicy::default().max_attempts(30)
/// }
///
/// #[queue_handler(stream = "orders", group = "stock", retry = patient(), timeout = "10s")]
/// async fn reserve(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
///     tx.execute_with("UPDATE stock SET reserved = reserved + 1 WHERE order_id = ?", (msg.order_id,))
///         .await?;
///     Ok(())
/// }
///
/// /// Once, no retries in place: a failure waits for `claim_idle`.
/// #[queue_handler(stream = "orders", group = "audit", retry = false)]
/// async fn audit(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
///     tx.execute_with("INSERT INTO audit (order_id) VALUES (?)", (msg.order_id,))
///         .await?;
///     Ok(())
/// }
/// # let _ = (reserve, audit);
/// ```
///
/// Rejected at compile time: a non-async fn, other arguments than
/// `(tx: &mut Tx<'_>, msg: T)` or `(msg: T)`, a payload taken by reference
/// or not serde-serializable, a missing or empty `stream`, an unknown
/// option, `retry` on a plain handler or `retry = true`, a `timeout` that
/// is not a whole number with a unit (or is zero) or not a `Duration`, a
/// `retry` that is not a `RetryPolicy` — and sending anything but `T` to the
/// stream.
#[cfg(feature = "queue")]
pub use safesync_macros::queue_handler;
/// The queue (feature `queue`): typed streams, handlers and the worker
/// loop on Redis Streams, dead letters, health and metrics.
#[cfg(feature = "queue")]
pub use safesync_queue as queue;
/// The queue's everyday items, also at the crate root.
#[cfg(feature = "queue")]
pub use safesync_queue::{
    CancellationToken, Handler, PlainHandler, SendOptions, Stream, Summary, Worker, redis,
};

/// Everything a user of the derives needs: `use safesync::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Db, DbOptions, Error, Held, Inserted, Locked, Record, RetryPolicy, Select, Tx, Versioned,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use safesync_core::__private::*;
    #[cfg(feature = "queue")]
    pub use safesync_queue as queue;
}
