//! One module per database backend, each implementing [`Backend`].
//!
//! Everything that differs between backends lives in its file: SQL
//! spellings and placeholders, what its error codes mean, row-lock clauses,
//! how a transaction begins (and bounds its row-lock waits), named locks
//! and their fencing tokens,
//! the idempotent insert, and the queue ledger's and outbox's SQL.
//!
//! Adding a backend takes:
//!
//! 1. one new file implementing [`Backend`] for its sqlx `Database` type
//!    (the compiler lists what it must provide: no item has a default) and
//!    invoking `accessors!` for its public `Db::from_*_pool`, `Db::as_*`
//!    and `Tx::as_*`;
//! 2. its line in `for_each_backend!` (beside its `mod` line), from which
//!    the `Pool` and `TxInner` enums, every `match` over them, the URL
//!    schemes, the statement-cache slots and the record-codec bound are
//!    generated;
//! 3. its public name, a `Dialect` variant (a missing one, or one without
//!    a line in the list, does not compile);
//! 4. its feature in the crates' `Cargo.toml`.

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use sqlx::error::DatabaseError;
use tokio::sync::OwnedMutexGuard;

use crate::db::{Db, DbOptions};
use crate::error::Result;
use crate::lock::Held;
use crate::record::{Record, TableMeta};
use crate::schema::{ColumnType, LiveTable};
use crate::tx::Tx;

pub(crate) mod tx_conn;

/// The SQL dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// MySQL and MariaDB (tested: MariaDB 10.11; MySQL 8 only by its error
    /// numbers and messages).
    MySql,
    /// PostgreSQL (tested: 15).
    Postgres,
}

macro_rules! dialect_slots {
    ([] $(($feature:literal, $variant:ident, $db:ty, $schemes:tt, $codec:ident))*) => {
        impl Dialect {
            /// How many dialects there are (a slot each in a record's
            /// statement cache): one per line of the list of backends.
            pub(crate) const COUNT: usize = [$(Dialect::$variant),*].len();

            /// This dialect's slot in a record's statement cache. The match
            /// lists every backend, so a variant without a line in the list
            /// does not compile, and the slots are `0..COUNT`.
            pub(crate) fn index(self) -> usize {
                match self {
                    $(Dialect::$variant)|* => self as usize,
                }
            }
        }
    };
}
for_each_backend!(dialect_slots! {});

/// What a database error means to safesync, across backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // reason: which variants are produced depends on the enabled backends
pub(crate) enum DbErrorKind {
    /// Unique or primary-key violation.
    Duplicate,
    /// Deadlock or serialisation failure: the transaction was rolled back.
    Deadlock,
    /// Gave up waiting for a row lock (or `NOWAIT` found it taken).
    LockWaitTimeout,
    /// SQLite busy / locked.
    Busy,
}

/// The three statements that read a row and lock it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowLocks {
    /// Appended to `find` for `lock` (waits up to the lock timeout).
    pub(crate) wait: &'static str,
    /// Appended for `lock_nowait`.
    pub(crate) nowait: &'static str,
    /// Appended for `lock_skip_locked`.
    pub(crate) skip_locked: &'static str,
}

/// What a backend offers for a transaction-scoped named lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // reason: which variants are produced depends on the enabled backends
pub(crate) enum XactLock {
    /// Taken; the server frees it at commit or rollback.
    Taken,
    /// Still busy when the timeout ran out.
    Busy,
    /// The backend has none: take a session lock and release it after
    /// commit or rollback.
    UseSession,
}

/// Everything backend-specific, implemented once per backend on its sqlx
/// `Database` type. No method has a default, so a new backend's file gets
/// the full list from the compiler.
pub(crate) trait Backend: sqlx::Database + Sized {
    /// The public name of this backend's dialect.
    const DIALECT: Dialect;

    // --- SQL spellings ---------------------------------------------------

    /// Opening and closing quote of an identifier.
    const QUOTE: char;
    /// Appends the `n`th (1-based) parameter placeholder.
    fn placeholder(out: &mut String, n: usize);
    /// Row-lock clauses; `None` when a transaction already excludes every
    /// other writer (SQLite's `BEGIN IMMEDIATE`).
    const ROW_LOCKS: Option<RowLocks>;
    /// Appended to the key probe run after an `UPDATE`/`DELETE` matched
    /// nothing ("" for a plain read).
    const PROBE_SUFFIX: &'static str;
    /// Whether the idempotent insert is `INSERT … ON CONFLICT (key) DO
    /// NOTHING`; otherwise a plain `INSERT` whose duplicate error
    /// [`Backend::duplicate_of_key`] tells apart.
    const ON_CONFLICT_DO_NOTHING: bool;
    /// Whether a failed statement aborts the whole transaction (then a
    /// `NOWAIT` read runs under a savepoint, so `LockBusy` leaves the
    /// transaction usable).
    const ERROR_ABORTS_TRANSACTION: bool;

    // --- errors ----------------------------------------------------------

    /// What `err` means, if it is this backend's error and safesync knows
    /// its code; `None` otherwise.
    fn classify(err: &(dyn DatabaseError + 'static)) -> Option<DbErrorKind>;

    /// After the idempotent insert of `record` failed with `err`, a
    /// duplicate: whether it was a duplicate of the record's own key (then
    /// the row already exists) rather than of another unique index.
    fn duplicate_of_key<T: Record>(
        tx: &mut Tx<'_>,
        record: &T,
        err: &sqlx::Error,
    ) -> impl Future<Output = Result<bool>> + Send;

    // --- connecting and transactions -------------------------------------

    /// Per-`Db` state of this backend (SQLite's write gate, MySQL's
    /// primary-key cache).
    type State: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// Connection options from a URL with `options` applied, and the
    /// default pool size.
    fn connect_options(
        url: &str,
        options: &DbOptions,
    ) -> std::result::Result<(<Self::Connection as sqlx::Connection>::Options, u32), sqlx::Error>;
    /// Rows a statement affected.
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// A new `Db`'s state.
    fn new_state() -> Self::State;
    /// SQLite: waits (at most `timeout`) for this `Db`'s in-process write
    /// gate; `Ok(None)` on backends without one.
    fn write_gate(
        state: &Self::State,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<OwnedMutexGuard<()>>>> + Send;
    /// The statement(s) that begin a transaction, sent in one round trip,
    /// bounding its row-lock waits by `lock_timeout`.
    fn begin_sql(lock_timeout: Duration) -> Cow<'static, str>;

    // --- named locks -----------------------------------------------------

    /// Takes the named lock `name` on a connection of its own, waiting at
    /// most `timeout`; `Ok(None)` when it stayed busy.
    fn lock_named(
        db: &Db,
        pool: &sqlx::Pool<Self>,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Held>>> + Send;
    /// Takes `name` for the rest of the transaction on `conn`.
    fn lock_xact(
        conn: &mut Self::Connection,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<XactLock>> + Send;

    // --- fencing tokens of named locks (`lock::fence`) --------------------

    /// `CREATE TABLE IF NOT EXISTS safesync_fence (name … PRIMARY KEY,
    /// token BIGINT NOT NULL)`.
    const FENCE_DDL: &'static str;
    /// The fence row's key for the lock `name`: the name as this backend's
    /// named lock sees it, so that two names sharing a lock share a fence.
    fn fence_key(name: &str) -> Cow<'_, str>;
    /// In the transaction on `conn`: adds one to the token of `key`
    /// (creating its row at 1) and returns the new token. Waits for
    /// fenced transactions holding the row (bounded by the transaction's
    /// lock timeout).
    fn fence_next(
        conn: &mut Self::Connection,
        key: &str,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// In the transaction on `conn`: the current token of `key`, read so
    /// that no increment can commit before this transaction ends (a shared
    /// row lock; SQLite: the write lock the transaction already holds);
    /// `None` when it has no row.
    fn fence_current(
        conn: &mut Self::Connection,
        key: &str,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    // --- the queue's ledger ----------------------------------------------

    /// `CREATE TABLE IF NOT EXISTS safesync_queue_ledger …`.
    const LEDGER_DDL: &'static str;
    /// Deletes the ledger rows older than the one bound value, seconds
    /// as an `i64` (`?`: the query layer numbers it where needed).
    const LEDGER_PRUNE: &'static str;
    /// Inserts one ledger row; `Ok(false)` when it was already there.
    fn ledger_insert(
        conn: &mut Self::Connection,
        stream: &str,
        group: &str,
        id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The statements that begin a transaction (as [`Backend::begin_sql`]
    /// does) *and* insert one ledger row, sent in one round trip; `None`
    /// where the ledger row costs no round trip anyway (SQLite, in
    /// process). `stream`, `group` and `id` go into the text as literals:
    /// callers pass only [`crate::ledger::literal_safe`] values. When the
    /// row is already there the statements fail and leave no transaction
    /// open on the server once the connection is closed.
    fn ledger_begin_sql(
        lock_timeout: Duration,
        stream: &str,
        group: &str,
        id: &str,
    ) -> Option<String>;
    /// Inserts several ledger rows in one statement; returns how many.
    fn ledger_insert_all(
        conn: &mut Self::Connection,
        stream: &str,
        group: &str,
        ids: &[&str],
    ) -> impl Future<Output = Result<u64>> + Send;

    // --- the queue's transactional outbox ---------------------------------

    /// `CREATE TABLE IF NOT EXISTS safesync_queue_outbox …` and its index,
    /// one statement each: `id` (auto-increment, never reused), `stream`,
    /// `nonce`, `payload`, `created_at`.
    const OUTBOX_DDL: &'static [&'static str];
    /// Reads and locks the oldest rows of one stream (bound: the stream,
    /// then the row limit as an `i64`), skipping rows another transaction
    /// has locked; columns `id`, `nonce`, `payload`, in `id` order.
    const OUTBOX_CLAIM: &'static str;
    /// The streams that have rows in the outbox, as text.
    const OUTBOX_STREAMS: &'static str;

    // --- statements with bound values (`query`) --------------------------

    /// How `?` placeholders are found in a statement and sent.
    const LEXICAL: Lexical;
    /// The most values one statement may bind.
    const MAX_PARAMS: usize;

    // --- schema from the struct (`schema`) -------------------------------

    /// Whether the catalog's column names compare exactly (otherwise
    /// ignoring ASCII case).
    const CASE_SENSITIVE_NAMES: bool;
    /// Appended to `CREATE TABLE … (…)`.
    const TABLE_OPTIONS: &'static str;
    /// The DDL type of a column (`in_key`: one of the key's columns).
    fn ddl_type(ty: ColumnType, in_key: bool) -> &'static str;
    /// Whether a live column of declared type `sql_type` holds every value
    /// of `ty`, as sqlx reads it back.
    fn holds(ty: ColumnType, sql_type: &str) -> bool;
    /// The record's live table from the catalog; `None` when it is absent.
    fn live_table(
        pool: &sqlx::Pool<Self>,
        meta: &TableMeta,
    ) -> impl Future<Output = Result<Option<LiveTable>>> + Send;
}

/// A backend's lexical rules for finding `?` placeholders outside string
/// literals, quoted identifiers and comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // reason: independent lexical rules, one flag each
pub(crate) struct Lexical {
    /// Placeholders are sent as `$1`, `$2`, …; `E'…'` strings take
    /// backslash escapes, `$tag$…$tag$` quotes, block comments nest, and a
    /// backtick is no quote (PostgreSQL).
    pub(crate) numbered: bool,
    /// `#` starts a comment, `--` only when followed by whitespace, and
    /// strings and `"…"` take backslash escapes (MySQL).
    pub(crate) mysql_comments_and_escapes: bool,
    /// `[identifier]` quotes (SQLite).
    pub(crate) bracket_identifiers: bool,
}

/// The list of backends: `(feature, variant, sqlx type, URL schemes, the
/// record-codec trait a record needs on it)`.
/// Calls `$callback! { [$args] (…) (…) … }`, from which the enums and
/// matches below are generated.
macro_rules! for_each_backend {
    ($($callback:ident)::+ ! { $($args:tt)* }) => {
        $($callback)::+! { [$($args)*]
            ("sqlite", Sqlite, sqlx::Sqlite, ["sqlite"], SqliteCodec)
            ("mysql", MySql, sqlx::MySql, ["mysql", "mariadb"], MySqlCodec)
            ("postgres", Postgres, sqlx::Postgres, ["postgres", "postgresql"], PgCodec)
        }
    };
}
pub(crate) use for_each_backend;

/// A backend's pool and its per-`Db` state.
#[derive(Debug)]
pub(crate) struct BackendPool<B: Backend> {
    pub(crate) pool: sqlx::Pool<B>,
    pub(crate) state: B::State,
}

impl<B: Backend> Clone for BackendPool<B> {
    fn clone(&self) -> Self {
        BackendPool {
            pool: self.pool.clone(),
            state: self.state.clone(),
        }
    }
}

macro_rules! enums {
    ([] $(($feature:literal, $variant:ident, $db:ty, [$($scheme:literal),*], $codec:ident))*) => {
        /// The pool of a `Db`, on whichever backend it is.
        #[derive(Debug, Clone)]
        pub(crate) enum Pool {
            $(
                #[cfg(feature = $feature)]
                $variant(BackendPool<$db>),
            )*
        }

        /// The transaction of a `Tx`, on whichever backend it is.
        pub(crate) enum TxInner<'c> {
            $(
                #[cfg(feature = $feature)]
                $variant($crate::backend::tx_conn::TxConn<'c, $db>),
            )*
        }

        impl TxInner<'_> {
            /// Commits (`commit`) or rolls back.
            pub(crate) async fn finish(self, commit: bool) -> std::result::Result<(), sqlx::Error> {
                match self {
                    $(
                        #[cfg(feature = $feature)]
                        TxInner::$variant(t) => match t {
                            $crate::backend::tx_conn::TxConn::Sqlx(t) if commit => t.commit().await,
                            $crate::backend::tx_conn::TxConn::Sqlx(t) => t.rollback().await,
                            $crate::backend::tx_conn::TxConn::Own(mut own) => {
                                let sql = if commit { "COMMIT" } else { "ROLLBACK" };
                                let conn: &mut <$db as sqlx::Database>::Connection = own.conn();
                                sqlx::Executor::execute(conn, sqlx::raw_sql(sql)).await?;
                                own.ended();
                                Ok(())
                            }
                        },
                    )*
                }
            }

            /// The backend's dialect.
            pub(crate) fn dialect(&self) -> Dialect {
                match self {
                    $(
                        #[cfg(feature = $feature)]
                        TxInner::$variant(_) => <$db as Backend>::DIALECT,
                    )*
                }
            }
        }

        $(
            #[cfg(feature = $feature)]
            impl From<BackendPool<$db>> for Pool {
                fn from(pool: BackendPool<$db>) -> Pool {
                    Pool::$variant(pool)
                }
            }

            #[cfg(feature = $feature)]
            impl<'c> From<sqlx::Transaction<'c, $db>> for TxInner<'c> {
                fn from(tx: sqlx::Transaction<'c, $db>) -> TxInner<'c> {
                    TxInner::$variant($crate::backend::tx_conn::TxConn::Sqlx(tx))
                }
            }

            #[cfg(feature = $feature)]
            impl From<$crate::backend::tx_conn::OwnTx<$db>> for TxInner<'static> {
                fn from(tx: $crate::backend::tx_conn::OwnTx<$db>) -> TxInner<'static> {
                    TxInner::$variant($crate::backend::tx_conn::TxConn::Own(tx))
                }
            }
        )*

        /// The feature of the backend whose URLs start with `scheme`.
        pub(crate) fn scheme_feature(scheme: &str) -> Option<&'static str> {
            $(
                if [$($scheme),*].contains(&scheme) {
                    return Some($feature);
                }
            )*
            None
        }

        /// Classifies a driver error by its backend's error code.
        pub(crate) fn classify(err: &sqlx::Error) -> Option<DbErrorKind> {
            let sqlx::Error::Database(db) = err else {
                return None;
            };
            $(
                #[cfg(feature = $feature)]
                if let Some(kind) = <$db as Backend>::classify(&**db) {
                    return Some(kind);
                }
            )*
            let _ = db;
            None
        }
    };
}
for_each_backend!(enums! {});

/// True when `err` is a row- or named-lock wait that gave up (or a
/// `NOWAIT` that found the lock taken), on any backend.
pub(crate) fn is_lock_wait_timeout(err: &sqlx::Error) -> bool {
    classify(err) == Some(DbErrorKind::LockWaitTimeout)
}

/// Runs `$body` with `$p` bound to the `Db`'s `BackendPool` and `$DB` to
/// its sqlx database type, on whichever backend the pool is.
macro_rules! on_pool {
    ($pool:expr, |$p:ident, $DB:ident| $body:expr) => {
        $crate::backend::for_each_backend!($crate::backend::on_pool_arms! { $pool, $p, $DB, $body })
    };
}
macro_rules! on_pool_arms {
    ([$pool:expr, $p:ident, $DB:ident, $body:expr] $(($feature:literal, $variant:ident, $db:ty, $schemes:tt, $codec:ident))*) => {
        match $pool {
            $(
                #[cfg(feature = $feature)]
                $crate::backend::Pool::$variant($p) => {
                    #[allow(clippy::upper_case_acronyms, dead_code)]
                    type $DB = $db;
                    $body
                }
            )*
        }
    };
}
pub(crate) use {on_pool, on_pool_arms};

/// Runs `$body` with `$conn` bound to the transaction's connection and `$DB`
/// to its sqlx database type, on whichever backend the transaction is.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident, $DB:ident| $body:expr) => {
        $crate::backend::for_each_backend!($crate::backend::on_tx_arms! { $tx, $conn, $DB, $body })
    };
}
macro_rules! on_tx_arms {
    ([$tx:expr, $conn:ident, $DB:ident, $body:expr] $(($feature:literal, $variant:ident, $db:ty, $schemes:tt, $codec:ident))*) => {
        match &mut $tx.inner {
            $(
                #[cfg(feature = $feature)]
                $crate::backend::TxInner::$variant(t) => {
                    #[allow(clippy::upper_case_acronyms, dead_code)]
                    type $DB = $db;
                    let $conn: &mut <$db as sqlx::Database>::Connection = &mut **t;
                    $body
                }
            )*
        }
    };
}
pub(crate) use {on_tx, on_tx_arms};

impl<B: Backend> BackendPool<B> {
    /// `pool` with a fresh state.
    pub(crate) fn new(pool: sqlx::Pool<B>) -> Self {
        BackendPool {
            pool,
            state: B::new_state(),
        }
    }
}

/// `INSERT … VALUES (?, ?, ?), …` for `rows` ledger rows, on backends
/// with `?` placeholders.
#[allow(dead_code)] // reason: unused when neither SQLite nor MySQL is on
fn ledger_values(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) VALUES (?, ?, ?)",
    );
    for _ in 1..rows {
        sql.push_str(", (?, ?, ?)");
    }
    sql
}

/// `INSERT …` of one ledger row with its values as `'…'` literals, for
/// the statements sent with `BEGIN`; only for
/// [`literal_safe`](crate::ledger::literal_safe) values.
#[allow(dead_code)] // reason: unused when neither MySQL nor PostgreSQL is on
fn ledger_insert_literal(stream: &str, group: &str, id: &str) -> String {
    format!(
        "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
         VALUES ('{stream}', '{group}', '{id}')"
    )
}

/// Runs `$body` with `$DB` bound to the transaction's sqlx database type,
/// without borrowing the transaction (the body may use it).
macro_rules! on_tx_backend {
    ($tx:expr, |$DB:ident| $body:expr) => {
        $crate::backend::for_each_backend!($crate::backend::on_tx_backend_arms! { $tx, $DB, $body })
    };
}
macro_rules! on_tx_backend_arms {
    ([$tx:expr, $DB:ident, $body:expr] $(($feature:literal, $variant:ident, $db:ty, $schemes:tt, $codec:ident))*) => {
        match $tx.inner {
            $(
                #[cfg(feature = $feature)]
                $crate::backend::TxInner::$variant(_) => {
                    #[allow(clippy::upper_case_acronyms, dead_code)]
                    type $DB = $db;
                    $body
                }
            )*
        }
    };
}
pub(crate) use {on_tx_backend, on_tx_backend_arms};

/// The record-codec traits, one per backend (`RowCodec<DB>` when the
/// backend is on, empty when off), and `Codecs`, all of them: what a
/// record must implement to run on every enabled backend. Expanded in
/// `record.rs`.
macro_rules! codecs {
    ([] $(($feature:literal, $variant:ident, $db:ty, $schemes:tt, $codec:ident))*) => {
        $(
            #[cfg(feature = $feature)]
            #[doc(hidden)]
            pub trait $codec: RowCodec<$db> {}
            #[cfg(feature = $feature)]
            impl<T: RowCodec<$db>> $codec for T {}
            #[cfg(not(feature = $feature))]
            #[doc(hidden)]
            pub trait $codec {}
            #[cfg(not(feature = $feature))]
            impl<T> $codec for T {}
        )*

        /// A record usable on every enabled backend.
        #[doc(hidden)]
        pub trait Codecs: $($codec +)* {}
        impl<T: $($codec +)*> Codecs for T {}
    };
}
pub(crate) use codecs;

/// A backend's public entry points: `Db::from_*_pool`, `Db::as_*` and
/// `Tx::as_*`. Invoked once in each backend file.
macro_rules! accessors {
    ($variant:ident, $name:literal, $pool:ty, $conn:ty, $from:ident, $as:ident, $wrap_doc:literal) => {
        impl $crate::db::Db {
            #[doc = concat!("Wraps an existing ", $name, " pool.")]
            /// It records into [`Metrics::global`](crate::Metrics::global);
            /// see [`Db::with_metrics`]. The [`DbOptions`](crate::DbOptions)
            /// defaults apply, among them the 10 s
            /// [`lock_timeout`](crate::DbOptions::lock_timeout)
            /// ([`Db::with_lock_timeout`] changes it).
            #[doc = $wrap_doc]
            pub fn $from(pool: $pool) -> $crate::db::Db {
                $crate::db::Db::wrap(
                    $crate::backend::Pool::$variant($crate::backend::BackendPool::new(pool)),
                    &$crate::db::DbOptions::default(),
                )
            }

            #[doc = concat!("The underlying ", $name, " pool, for queries of your own.")]
            pub fn $as(&self) -> Option<&$pool> {
                #[allow(irrefutable_let_patterns)] // reason: the only variant when one backend is on
                if let $crate::backend::Pool::$variant(p) = self.pool() {
                    Some(&p.pool)
                } else {
                    None
                }
            }
        }

        impl $crate::tx::Tx<'_> {
            #[doc = concat!("The ", $name, " connection of this transaction, for queries of your own.")]
            pub fn $as(&mut self) -> Option<&mut $conn> {
                #[allow(irrefutable_let_patterns)] // reason: the only variant when one backend is on
                if let $crate::backend::TxInner::$variant(t) = &mut self.inner {
                    Some(&mut **t)
                } else {
                    None
                }
            }
        }
    };
}
pub(crate) use accessors;
