//! Records: the traits `#[derive(Versioned)]` and `#[derive(Locked)]`
//! implement, and the operations they give.

use std::fmt::Debug;
use std::future::Future;
use std::sync::OnceLock;

use sqlx::Database;
use sqlx::error::BoxDynError;

use crate::backend::{Backend, Dialect};
use crate::error::Result;
use crate::held::Held;
use crate::ops;
use crate::sql::Sql;
use crate::tx::Tx;

/// Static description of a record's table, written by the derive macros.
///
/// Every identifier here was checked at compile time to be a plain SQL
/// identifier (`[A-Za-z_][A-Za-z0-9_]*`).
#[derive(Debug)]
pub struct TableMeta {
    /// Table name.
    pub table: &'static str,
    /// Optional schema (Postgres schema, MySQL database).
    pub schema: Option<&'static str>,
    /// Stored columns, in field order (skipped fields excluded).
    pub columns: &'static [&'static str],
    /// Indexes into `columns` of the key columns, in field order.
    pub key: &'static [usize],
    /// Index into `columns` of the version column.
    pub version: Option<usize>,
}

/// Per-type cache of the SQL text for each dialect, built once from
/// [`TableMeta`] on first use.
#[derive(Debug)]
pub struct Statements {
    by_dialect: [OnceLock<Sql>; Dialect::COUNT],
}

impl Statements {
    /// An empty cache, for a `static`.
    #[allow(clippy::new_without_default)] // reason: only used in `static` items, which need a const fn
    pub const fn new() -> Self {
        Statements {
            by_dialect: [const { OnceLock::new() }; Dialect::COUNT],
        }
    }

    /// The statements on backend `B`; `Error::Config` when `meta` cannot
    /// describe a record (a hand-written `Table` impl with no key, say).
    pub(crate) fn get<B: Backend>(&self, meta: &TableMeta) -> Result<&Sql> {
        let slot = &self.by_dialect[B::DIALECT.index()];
        if let Some(sql) = slot.get() {
            return Ok(sql);
        }
        crate::sql::check(meta)?;
        Ok(slot.get_or_init(|| crate::sql::statements::<B>(meta)))
    }
}

/// Integer types usable as a `#[safesync(version)]` field.
#[diagnostic::on_unimplemented(
    message = "the `#[safesync(version)]` field must be an integer, not `{Self}`",
    label = "not an integer type",
    note = "use i64 (or i32, i16) for the version column: those work on every backend"
)]
pub trait VersionInt: Copy + Send + Sync + 'static {
    /// The version as an `i64`, for error messages.
    fn to_i64(self) -> i64;
    /// The version after a successful update.
    #[must_use]
    fn next(self) -> Self;
}

macro_rules! version_int {
    ($($t:ty),*) => {$(
        impl VersionInt for $t {
            fn to_i64(self) -> i64 { i64::from(self) }
            fn next(self) -> Self { self.wrapping_add(1) }
        }
    )*};
}
version_int!(i16, i32, i64);

/// Table metadata and key of a record. Implemented by the derives; one of
/// them owns it (`Versioned` when the struct has a version field, `Locked`
/// otherwise).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a safesync record",
    note = "derive `Versioned` (a struct with a `#[safesync(version)]` field) or `Locked` on it"
)]
pub trait Table: Sized + Send + Sync + Unpin + 'static {
    /// The key: the key field's type, or a tuple of them for a composite key.
    type Key: Debug + Send + Sync;

    /// Table, columns, key and version column.
    const META: &'static TableMeta;

    /// The cached SQL of this type.
    #[doc(hidden)]
    fn statements() -> &'static Statements;

    /// The current version, when the record has a version column.
    fn version(&self) -> Option<i64>;

    /// Advances the version field after a successful versioned update.
    #[doc(hidden)]
    fn bump_version(&mut self);

    /// The record's own key, formatted with `Debug`, for messages.
    fn key_debug(&self) -> String;
}

/// Binding and decoding of a record for one backend. Implemented by the
/// derives for every `DB` whose types the fields support.
#[doc(hidden)]
pub trait RowCodec<DB: Database>: Table {
    /// Every column, in `META.columns` order.
    fn bind_all<'q>(
        &'q self,
        args: &mut <DB as Database>::Arguments<'q>,
    ) -> Result<(), BoxDynError>;
    /// Every column that is neither key nor version (the `SET` list).
    fn bind_values<'q>(
        &'q self,
        args: &mut <DB as Database>::Arguments<'q>,
    ) -> Result<(), BoxDynError>;
    /// The record's own key columns.
    fn bind_own_key<'q>(
        &'q self,
        args: &mut <DB as Database>::Arguments<'q>,
    ) -> Result<(), BoxDynError>;
    /// The version column (nothing when there is none).
    fn bind_version<'q>(
        &'q self,
        args: &mut <DB as Database>::Arguments<'q>,
    ) -> Result<(), BoxDynError>;
    /// A key value.
    fn bind_key<'q>(
        key: &'q Self::Key,
        args: &mut <DB as Database>::Arguments<'q>,
    ) -> Result<(), BoxDynError>;
    /// A row of `find`/`lock` (`META.columns` order) into the record.
    fn decode(row: &<DB as Database>::Row) -> Result<Self, sqlx::Error>;
}

// `SqliteCodec`, `MySqlCodec`, `PgCodec` and `Codecs`, from the list of
// backends.
crate::backend::for_each_backend!(crate::backend::codecs! {});

/// What [`Record::insert_idempotent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Inserted {
    /// The row was inserted.
    Inserted,
    /// A row with the same key already existed; nothing was written.
    AlreadyExists,
}

/// Operations every derived record has: `find`, `insert`,
/// `insert_idempotent`; `update` and `delete` on versioned records; and
/// `overwrite`, the deliberate blind write, on records without a version.
///
/// Implemented for every type that derives [`Versioned`] or [`Locked`];
/// import it with `use safesync::prelude::*`.
///
/// A versioned record's `update` and `delete` check the version inside the
/// statement itself (`WHERE key = ? AND version = ?`) and answer
/// [`Error::Conflict`](crate::Error::Conflict) when another writer got there
/// first, so they are safe on a value read with `find`. A record without a
/// version column has no such check: it is written through the
/// [`Held`](crate::Held) row that [`Locked::lock`] returns, and a plain value
/// has no `update` or `delete` at all (the compiler says to lock the row
/// first).
pub trait Record: Table + Codecs {
    /// `SELECT cols FROM table WHERE key = ?`.
    fn find<'a>(
        tx: &'a mut Tx<'_>,
        key: &'a Self::Key,
    ) -> impl Future<Output = Result<Option<Self>>> + Send + 'a {
        ops::fetch(tx, key, |s| &s.find, None)
    }

    /// `INSERT INTO table (cols) VALUES (…)`; a duplicate key is
    /// [`Error::Duplicate`](crate::Error::Duplicate).
    fn insert<'a>(&'a self, tx: &'a mut Tx<'_>) -> impl Future<Output = Result<()>> + Send + 'a {
        ops::insert(self, tx)
    }

    /// Inserts, or reports [`Inserted::AlreadyExists`] when a row with this
    /// key exists. Only a duplicate of this key is swallowed: NOT NULL,
    /// CHECK, foreign-key and other unique violations are still errors.
    fn insert_idempotent<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
    ) -> impl Future<Output = Result<Inserted>> + Send + 'a {
        ops::insert_idempotent(self, tx)
    }

    /// Versioned records: writes every non-key column back, only if the row
    /// is still at this record's version, which is then advanced; otherwise
    /// [`Error::Conflict`](crate::Error::Conflict). A missing row is
    /// [`Error::NotFound`](crate::Error::NotFound).
    ///
    /// A record without a version column has no `update` on a plain value:
    /// lock the row ([`Locked::lock`]) and update the [`Held`](crate::Held)
    /// row, or [`overwrite`](Record::overwrite) deliberately.
    fn update<'a>(&'a mut self, tx: &'a mut Tx<'_>) -> impl Future<Output = Result<()>> + Send + 'a
    where
        Self: VersionChecked,
    {
        ops::update(self, tx)
    }

    /// Versioned records: deletes the row, only at this version.
    fn delete<'a>(&'a self, tx: &'a mut Tx<'_>) -> impl Future<Output = Result<()>> + Send + 'a
    where
        Self: VersionChecked,
    {
        ops::delete(self, tx)
    }

    /// Records without a version column: writes every non-key column by key,
    /// whatever happened to the row since it was read — a blind write that
    /// loses concurrent updates unless something else (a named lock, a
    /// single writer) excludes them. Prefer [`Locked::lock`] and
    /// [`Held::update`](crate::Held::update). A missing row is
    /// [`Error::NotFound`](crate::Error::NotFound).
    fn overwrite<'a>(
        &'a mut self,
        tx: &'a mut Tx<'_>,
    ) -> impl Future<Output = Result<()>> + Send + 'a
    where
        Self: Unversioned,
    {
        ops::update(self, tx)
    }
}

/// Implemented by `#[derive(Versioned)]`: `update` and `delete` on a plain
/// value are safe, because the version is checked in the statement.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no version column, so `update`/`delete` on a row read without a lock would lose concurrent updates",
    label = "lock the row first: `{Self}::lock(&mut tx, &key)` returns a `Held<{Self}>`, which has `update` and `delete`",
    note = "or add a `#[safesync(version)]` field and derive `Versioned`; `overwrite` is the deliberate blind write by key"
)]
pub trait VersionChecked {}

/// Implemented by `#[derive(Locked)]` on a struct without a version field:
/// the blind [`Record::overwrite`] is allowed.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is versioned: `overwrite` would bypass its version check",
    label = "use `update`, which checks and advances the version",
    note = "`overwrite` is only for records without a `#[safesync(version)]` field"
)]
pub trait Unversioned {}

impl<T: Table + Codecs> Record for T {}

/// A record with a version column: optimistic concurrency.
///
/// Derive it with `#[derive(Versioned)]`; its operations are those of
/// [`Record`], whose `update` and `delete` compare and advance the version.
pub trait Versioned: Record {}

/// Asked of a `#[derive(Locked)]` struct that has a version field;
/// implemented by `#[derive(Versioned)]` (a marker, so the check does not
/// depend on the record's field types).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` has a `#[safesync(version)]` field, so it must derive `Versioned` as well as `Locked`",
    label = "this version field makes `Versioned` the owner of the record's operations",
    note = "add `Versioned` to the derive list: `#[derive(Versioned, Locked)]`"
)]
pub trait VersionedDerived {}

/// A record that can be locked with `SELECT … FOR UPDATE`.
///
/// The lock is held until the transaction commits or rolls back; the calls
/// take a [`Tx`], so locking outside a transaction does not compile.
///
/// Each returns the row as a [`Held`], which dereferences to the record and
/// has `update` and `delete`; for a record without a version column those
/// are the only checked writes.
///
/// On SQLite, which has no row locks, every safesync transaction is
/// `BEGIN IMMEDIATE` and already holds the database's write lock, so these
/// are plain reads that are still exclusive.
pub trait Locked: Record {
    /// `SELECT … FOR UPDATE`: waits for other holders.
    fn lock<'a>(
        tx: &'a mut Tx<'_>,
        key: &'a Self::Key,
    ) -> impl Future<Output = Result<Option<Held<Self>>>> + Send + 'a {
        held(tx, key, |s| &s.lock, None)
    }

    /// `SELECT … FOR UPDATE NOWAIT`: [`Error::LockBusy`](crate::Error::LockBusy)
    /// when another transaction holds the row. The transaction stays usable
    /// afterwards on every backend (on Postgres a savepoint keeps it alive).
    fn lock_nowait<'a>(
        tx: &'a mut Tx<'_>,
        key: &'a Self::Key,
    ) -> impl Future<Output = Result<Option<Held<Self>>>> + Send + 'a {
        held(tx, key, |s| &s.lock_nowait, Some(ops::Nowait))
    }

    /// `SELECT … FOR UPDATE SKIP LOCKED`: `None` when the row is absent or
    /// locked by someone else.
    fn lock_skip_locked<'a>(
        tx: &'a mut Tx<'_>,
        key: &'a Self::Key,
    ) -> impl Future<Output = Result<Option<Held<Self>>>> + Send + 'a {
        held(tx, key, |s| &s.lock_skip_locked, None)
    }
}

/// A row lock's fetch, its row marked as held by `tx`.
async fn held<T: Record>(
    tx: &mut Tx<'_>,
    key: &T::Key,
    pick: fn(&Sql) -> &String,
    nowait: Option<ops::Nowait>,
) -> Result<Option<Held<T>>> {
    let id = tx.id();
    Ok(ops::fetch(tx, key, pick, nowait)
        .await?
        .map(|row| Held::new(row, id)))
}
