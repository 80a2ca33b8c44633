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
//!   handled, see "Which servers are tested" in CONTRIBUTING.md).
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
//!
//! Every enabled backend must be able to store every field of a record, so
//! a project without SQLite sets `default-features = false`.
//!
//! ## Reference and guides
//!
//! - [`derive@Versioned`] and [`derive@Locked`]: every `#[safesync(...)]`
//!   attribute, with what it generates.
//! - [`transactional`] and `queue_handler` (feature `queue`): every option.
//! - [`guide`]: choosing a strategy; running the queue in production and
//!   moving from Python's coti-safesync-framework (feature `queue`).

pub use safesync_core::{
    AdvisoryLock, ColumnType, Db, DbOptions, Dialect, Error, Held, HeldNamedLock, Inserted,
    LockOptions, LockWait, Locked, Mismatch, Params, Record, Result, RetryPolicy, Scalar, Select,
    SqlType, Table, Tx, Value, Versioned, advisory_key,
};
/// `#[derive(Versioned)]`: a record with optimistic concurrency on a version
/// column.
///
/// It implements [`Record`] (through the hidden `Table` and row codec) and
/// the [`Versioned`](trait@Versioned) marker, so the struct gets
/// `find`, `find_many`, `select_all` / `select_optional` / `select_one`,
/// `insert`, `insert_idempotent`, and an `update` and `delete` that carry
/// `AND version = ?`: a row changed since it was read makes them
/// [`Error::Conflict`], and a successful `update` advances the version in
/// the row and in the value. [`Db::create_table`] and [`Db::check_table`]
/// work on it when every stored field's type is an [`SqlType`]. Add
/// `#[derive(Locked)]` as well for row locks.
///
/// ```
/// use safesync::prelude::*;
///
/// #[derive(Debug, Clone, Versioned)]
/// #[safesync(table = "accounts")]
/// struct Account {
///     #[safesync(key)]
///     id: i64,
///     balance: i64,
///     #[safesync(version)]
///     version: i64,
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = Db::connect("sqlite::memory:").await?;
/// db.create_table::<Account>().await?;
/// let mut tx = db.begin().await?;
/// Account { id: 1, balance: 0, version: 0 }.insert(&mut tx).await?;
///
/// let mut fresh = Account::find(&mut tx, &1).await?.ok_or_else(Error::not_found)?;
/// let mut stale = fresh.clone();
/// fresh.balance += 10;
/// fresh.update(&mut tx).await?; // UPDATE … WHERE id = ? AND version = 0; version becomes 1
/// assert_eq!(fresh.version, 1);
///
/// stale.balance += 99;
/// assert!(matches!(stale.update(&mut tx).await, Err(Error::Conflict { .. })));
/// tx.commit().await?;
/// # Ok::<_, safesync::Error>(()) }).unwrap();
/// ```
///
/// # Attributes
///
/// Every attribute is written inside `#[safesync(...)]`; several may share
/// one, separated by commas. An unknown or repeated key is a compile error
/// that lists the valid ones, and every mistake of a struct is reported in
/// the same build.
///
/// On the struct:
///
/// | attribute | required | what it generates |
/// |---|---|---|
/// | `table = "name"` | yes | the table every statement names, and that `create_table` creates. A plain SQL identifier (an ASCII letter or `_`, then letters, digits and `_`, at most 63 bytes), checked at compile time: no identifier ever comes from a runtime string. |
/// | `schema = "name"` | no | qualifies the table, `schema.table`, in every statement; `create_table` creates the table there (the schema itself must exist; on SQLite it is the name of an attached database). Checked like `table`. |
/// | `crate = "path"` | no | the path the generated code names the runtime by, `::safesync` when absent; for a crate that re-exports safesync under another name. |
///
/// On fields:
///
/// | attribute | what it generates |
/// |---|---|
/// | `key` | the field is (part of) the primary key: the `WHERE` of `find`, `update`, `delete` and the row locks, and `PRIMARY KEY` in `create_table` (a `String` key is `VARCHAR(255)` on MySQL). One field: the record's key type is that field's type (`Account::find(tx, &7)`). Several fields: a **composite key**, a tuple of their types in field order (`Membership::find(tx, &(org, user))`). At least one field must be a key. |
/// | `version` | exactly one field, of type `i16`, `i32` or `i64`, required by `Versioned`: `update` and `delete` add `AND version = ?`, and `update` sets `version = version + 1` and advances the field. It cannot also be the key. |
/// | `column = "name"` | the field's column is `name` instead of the field's own name (a field name that is not a plain SQL identifier needs one). Checked like `table`; two fields cannot share a column. |
/// | `skip` | the field is not stored: no column, in no statement; reading a row fills it with `Default::default()` (so its type must be `Default`). It cannot be combined with `key`, `version` or `column`. |
///
/// ```
/// use safesync::prelude::*;
///
/// /// A composite key, a renamed column and a field that is not stored.
/// #[derive(Debug, Clone, Versioned)]
/// #[safesync(table = "memberships", crate = "::safesync")]
/// struct Membership {
///     #[safesync(key)]
///     org: String,
///     #[safesync(key)]
///     user_id: i64,
///     #[safesync(column = "membership_role")]
///     role: String,
///     #[safesync(skip)]
///     loaded_at: Option<std::time::Instant>,
///     #[safesync(version)]
///     version: i32,
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = Db::connect("sqlite::memory:").await?;
/// db.create_table::<Membership>().await?; // PRIMARY KEY (org, user_id)
/// let mut tx = db.begin().await?;
/// let m = Membership {
///     org: "acme".into(), user_id: 7, role: "admin".into(), loaded_at: None, version: 0,
/// };
/// m.insert(&mut tx).await?;
/// let found = Membership::find(&mut tx, &("acme".to_owned(), 7)).await?.expect("inserted");
/// assert_eq!(found.role, "admin");
/// assert!(found.loaded_at.is_none()); // skipped: Default
/// # Ok::<_, safesync::Error>(()) }).unwrap();
/// ```
///
/// ```no_run
/// # use safesync::prelude::*;
/// /// In the `billing` schema: `billing.invoices` in every statement.
/// #[derive(Debug, Clone, Versioned)]
/// #[safesync(table = "invoices", schema = "billing")]
/// struct Invoice {
///     #[safesync(key)]
///     id: i64,
///     total: i64,
///     #[safesync(version)]
///     version: i64,
/// }
/// ```
///
/// Rejected at compile time, each with a message at the mistake: a struct
/// without a `table` or without a key, no version field or two, a version
/// that is not an integer, names that are not SQL identifiers, enums,
/// tuple, unit and generic structs, and a field type that some enabled
/// backend cannot store (one error at the field, naming the backend).
pub use safesync_macros::Versioned;

/// `#[derive(Locked)]`: a record whose rows can be locked with
/// `SELECT … FOR UPDATE`.
///
/// It implements the [`Locked`](trait@Locked) trait: `T::lock`,
/// `T::lock_nowait` and `T::lock_skip_locked`, each taking the
/// [`Tx`] (so a lock outside a transaction does not compile) and returning
/// the row as a [`Held`], which dereferences to the record and has `update`
/// and `delete` for the transaction that locked it.
///
/// - **Without a `version` field**, `Locked` owns the record impls (as
///   `Versioned` does otherwise): `find`, `insert`, queries and
///   `create_table` work as usual, but a value read with `find` has no
///   `update` or `delete` — written back by key it would lose the updates
///   made in between. Write through the [`Held`] row, or with the
///   deliberate blind [`Record::overwrite`] for rows something else
///   protects.
/// - **With a `version` field**, derive `Versioned` too
///   (`#[derive(Versioned, Locked)]`): `Versioned` owns the record impls,
///   and a `Held` row's `update` still checks the version.
///
/// ```
/// use safesync::prelude::*;
///
/// #[derive(Debug, Clone, Locked)]
/// #[safesync(table = "stock")]
/// struct Stock {
///     #[safesync(key)]
///     sku: String,
///     on_hand: i64,
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = Db::connect("sqlite::memory:").await?;
/// db.create_table::<Stock>().await?;
/// let mut tx = db.begin().await?;
/// Stock { sku: "A-1".into(), on_hand: 5 }.insert(&mut tx).await?;
///
/// let mut row = Stock::lock(&mut tx, &"A-1".to_owned()).await?.ok_or_else(Error::not_found)?;
/// row.on_hand -= 1; // held until commit: no one else changes it meanwhile
/// row.update(&mut tx).await?;
/// tx.commit().await?;
/// # Ok::<_, safesync::Error>(()) }).unwrap();
/// ```
///
/// # Attributes
///
/// The same as [`Versioned`](macro@Versioned)'s, with the same checks:
/// `table = "…"` (required), `schema = "…"` and `crate = "…"` on the
/// struct; `key` (one field or several: a composite key is a tuple),
/// `version`, `column = "…"` and `skip` on fields. Here `version` is
/// optional; when present, `Versioned` must be derived as well, and its
/// absence is a compile error at the version field.
///
/// ```
/// use safesync::prelude::*;
///
/// /// Locked and versioned: `Held::update` checks and advances the version.
/// #[derive(Debug, Clone, Versioned, Locked)]
/// #[safesync(table = "seats")]
/// struct Seat {
///     #[safesync(key)]
///     flight: String,
///     #[safesync(key)]
///     number: i32,
///     #[safesync(column = "passenger_name")]
///     passenger: Option<String>,
///     #[safesync(version)]
///     version: i64,
/// }
/// # let _ = Seat { flight: String::new(), number: 1, passenger: None, version: 0 };
/// ```
///
/// Rejected at compile time besides `Versioned`'s rules: a version field
/// without `#[derive(Versioned)]`, `update`/`delete` on a value of an
/// unversioned record that was not locked, and `overwrite` on a versioned
/// one.
pub use safesync_macros::Locked;

/// Runs an ordinary `async fn` in a transaction: commit on `Ok`, rollback
/// on `Err` or panic.
///
/// The fn takes the transaction first, `tx: &mut Tx<'_>`, and returns
/// `Result<T, Error>`. The attribute turns it into a fn of the same name,
/// visibility and generics that takes `db: &Db` in place of the
/// transaction and runs the body through [`Db::transaction`].
///
/// # Options
///
/// Options are comma-separated; an unknown or repeated option is a compile
/// error, and every mistake is reported in one build.
///
/// - `#[transactional]` (no option): one transaction; the arguments are
///   moved in (any error type `E: From<Error>` works).
/// - `#[transactional(retry)]`: [`Db::retry`] with
///   [`RetryPolicy::default()`]: every attempt is a new transaction that
///   runs the body again. Shared references (`&T`) are handed to each
///   attempt as they are; every other argument is cloned per attempt, so it
///   must be `Clone`. The error type must be [`Error`].
/// - `#[transactional(retry = expr)]`: the same with the [`RetryPolicy`]
///   `expr`, evaluated once per call.
/// - `crate = "path"`: where the generated code finds safesync, when your
///   crate renames it (`use safesync as ss;` with `crate = "ss"`) or
///   re-exports it (`crate = "my_app::db::safesync"`). Default `::safesync`.
///
/// `&mut` arguments besides the transaction are rejected: a retried body
/// could not get them again. The future the fn returns is `Send` when its
/// arguments are, so it runs inside `tokio::spawn`. Every mistake in the
/// options and the signature is reported in one build, and the wrapper is
/// still emitted whenever the signature allows one, so call sites do not
/// error too.
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
/// fn patient() -> RetryPolicy {
///     RetryPolicy::default().max_attempts(30)
/// }
///
/// /// Retried under a policy of its own.
/// #[transactional(retry = patient())]
/// async fn withdraw(tx: &mut Tx<'_>, id: i64, amount: i64) -> Result<i64, Error> {
///     let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
///     a.balance -= amount;
///     a.update(tx).await?;
///     Ok(a.balance)
/// }
///
/// /// safesync under another name: `crate = "…"` tells the macro.
/// mod renamed {
///     use safesync as ss;
///
///     #[ss::transactional(retry, crate = "ss")]
///     pub async fn touch_all(tx: &mut ss::Tx<'_>) -> Result<u64, ss::Error> {
///         tx.execute("UPDATE accounts SET owner = owner").await
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = Db::connect("sqlite::memory:").await?;
/// db.create_table::<Account>().await?;
///
/// open(&db, 1, "ada").await?;
/// assert_eq!(deposit(&db, 1, 10).await?, 10);
/// assert_eq!(withdraw(&db, 1, 3).await?, 7);
/// assert!(deposit(&db, 2, 10).await.is_err()); // no account 2: rolled back
/// assert_eq!(renamed::touch_all(&db).await?, 1); // rows changed
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
/// # async fn demo(db: Db, redis: safesync::queue::Redis) -> Result<(), Error> {
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
/// The attribute's names are the default. To run the handler on a stream
/// and group chosen at runtime, `bill.on(stream, group)` gives a
/// [`queue::Routed`] the worker takes like the handler, whose
/// `.stream()` is the typed producer for that name;
/// `bill::stream_named(name)` is the same producer without the wrapper.
/// Both accept only the handler's payload type.
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
/// # Options
///
/// Written `#[queue_handler(key = value, …)]`; an unknown or repeated
/// option is a compile error that lists the valid ones.
///
/// - `stream = "name"` (required): the Redis stream key the handler reads
///   and `name::stream()` sends to — exactly this name, not prefixed, so
///   producers in other languages can write to it. It must not be empty.
/// - `group = "name"`: the consumer group; the fn's name when absent. Each
///   group gets every entry of the stream once, and has its own dead
///   letters (`{<stream>}:dead:<group>`).
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
/// - `crate = "path"`: where the generated code finds safesync, when your
///   crate renames it (`use safesync as ss;` with `crate = "ss"`) or
///   re-exports it. Default `::safesync`.
///
/// ```
/// use std::time::Duration;
///
/// use safesync::prelude::*;
/// use safesync::queue::{Handler, PlainHandler};
/// use safesync::queue_handler;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced {
///     order_id: i64,
/// }
///
/// fn patient() -> RetryPolicy {
///     RetryPolicy::default().max_attempts(30)
/// }
///
/// /// `retry = expr` and a literal `timeout`.
/// #[queue_handler(stream = "orders", group = "stock", retry = patient(), timeout = "10s")]
/// async fn reserve(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
///     tx.execute_with("UPDATE stock SET reserved = reserved + 1 WHERE order_id = ?", (msg.order_id,))
///         .await?;
///     Ok(())
/// }
///
/// /// `retry = false`: once, no retries in place; a failure waits for the
/// /// next delivery.
/// #[queue_handler(stream = "orders", group = "audit", retry = false)]
/// async fn audit(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
///     tx.execute_with("INSERT INTO audit (order_id) VALUES (?)", (msg.order_id,))
///         .await?;
///     Ok(())
/// }
///
/// const SLOW: Duration = Duration::from_secs(45);
///
/// /// No `group`: the group is `ship`. `timeout = expr`, a `Duration`.
/// #[queue_handler(stream = "orders", timeout = SLOW)]
/// async fn ship(msg: OrderPlaced) -> Result<(), Error> {
///     let _ = msg.order_id;
///     Ok(())
/// }
///
/// /// safesync under another name: `crate = "…"` tells the macro.
/// mod renamed {
///     use safesync as ss;
///
///     #[ss::queue_handler(stream = "orders", group = "stats", crate = "ss")]
///     pub async fn count(_tx: &mut ss::Tx<'_>, _order_id: i64) -> Result<(), ss::Error> {
///         Ok(())
///     }
/// }
///
/// assert_eq!(Handler::retry_policy(&reserve), Some(patient()));
/// assert_eq!(Handler::timeout(&reserve), Some(Duration::from_secs(10)));
/// assert_eq!(Handler::retry_policy(&audit), Some(RetryPolicy::never()));
/// assert_eq!(Handler::timeout(&audit), None); // the worker's
/// assert_eq!(PlainHandler::group(&ship), "ship");
/// assert_eq!(PlainHandler::timeout(&ship), Some(SLOW));
/// assert_eq!(Handler::group(&renamed::count), "stats");
/// assert_eq!(renamed::count::stream().name(), "orders");
/// ```
///
/// Rejected at compile time: a non-async fn, other arguments than
/// `(tx: &mut Tx<'_>, msg: T)` or `(msg: T)`, a payload taken by reference
/// or not serde-serializable, a missing or empty `stream` or `group`, an
/// unknown or repeated option, `retry` on a plain handler or `retry = true`,
/// a `timeout` that is not a whole number with a unit (or is zero) or not a
/// `Duration`, a `retry` that is not a `RetryPolicy`, a `crate` that is not
/// a path — and sending anything but `T` to the stream. Every mistake is
/// reported in one build; whenever the arguments name a payload the handler
/// is still emitted (without the bad option), so `Worker::handle(name)`,
/// `name::stream()` and `name::call(…)` do not error too.
#[cfg(feature = "queue")]
pub use safesync_macros::queue_handler;
/// The queue (feature `queue`): typed streams, handlers and the worker
/// loop on Redis Streams, dead letters, health and metrics.
#[cfg(feature = "queue")]
pub use safesync_queue as queue;
/// The queue's everyday items, also at the crate root.
#[cfg(feature = "queue")]
pub use safesync_queue::{
    CancellationToken, Handler, PlainHandler, Relay, Routed, SendOptions, Stream, Summary, Worker,
    redis,
};

#[doc = include_str!("guide/mod.md")]
pub mod guide {
    #[doc = include_str!("guide/strategy.md")]
    pub mod strategy {}

    #[cfg(feature = "queue")]
    #[doc = include_str!("guide/queue.md")]
    pub mod queue {}

    #[cfg(feature = "queue")]
    #[doc = include_str!("guide/migrating.md")]
    pub mod migrating {}
}

/// The README's Rust snippets, compiled as doc tests so that they cannot
/// drift from the code. Its queue snippets need the `queue` feature, and
/// its first program SQLite.
#[cfg(all(doctest, feature = "queue", feature = "sqlite"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

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
