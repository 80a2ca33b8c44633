//! The record operations, written once and run on every backend.

use std::fmt;
use std::time::Instant;

use sqlx::{Arguments as _, Database, Executor as _};
use tracing::Instrument as _;

use crate::backend::{Backend, DbErrorKind, classify, on_tx, on_tx_backend};
use crate::error::{Error, LockWait, Result};
use crate::metrics::{WriteOp, WriteOutcome};
use crate::record::{Inserted, Record, RowCodec, Table};
use crate::sql::Sql;
use crate::tx::Tx;

/// Marks a `NOWAIT` fetch, whose lock failure is [`Error::LockBusy`].
pub(crate) struct Nowait;

fn encode_err(e: sqlx::error::BoxDynError) -> Error {
    Error::Database(sqlx::Error::Encode(e))
}

fn key_of<T: Table>(key: &T::Key) -> String {
    format!("{key:?}")
}

/// The statements of `T` on the transaction's backend; `Error::Config`
/// when `T::META` cannot describe a record.
pub(crate) fn statements<T: Record>(tx: &Tx<'_>) -> Result<&'static Sql> {
    on_tx_backend!(tx, |DB| T::statements().get::<DB>(T::META))
}

/// A row-lock wait that gave up, as [`Error::LockTimeout`] naming the
/// table and key; any other error as it is.
fn row_lock_timeout<T: Table>(tx: &Tx<'_>, key: impl FnOnce() -> String, err: Error) -> Error {
    match err {
        Error::Database(e) if crate::backend::is_lock_wait_timeout(&e) => Error::LockTimeout {
            name: format!("`{}` key {}", T::META.table, key()),
            waited: tx.db.lock_timeout(),
            what: LockWait::Row,
        },
        other => other,
    }
}

/// A record's key for a span field, formatted only if a subscriber reads it.
struct KeyOf<'a, T>(&'a T);

impl<T: Table> fmt::Debug for KeyOf<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.key_debug())
    }
}

/// `find`, or a row lock of the `kind` label of the lock metrics.
///
/// `pick` selects the statement, and `Record`/`Locked` each pass the
/// selector of their own field, so the field picked tells the read apart.
fn row_lock_kind(stmts: &Sql, sql: &String) -> Option<&'static str> {
    if std::ptr::eq(sql, &raw const stmts.lock) {
        Some("row")
    } else if std::ptr::eq(sql, &raw const stmts.lock_nowait) {
        Some("row_nowait")
    } else if std::ptr::eq(sql, &raw const stmts.lock_skip_locked) {
        Some("row_skip_locked")
    } else {
        None
    }
}

/// `find` (a `safesync.record` span) and the row locks (a
/// `safesync.lock.acquire` span, and the lock-acquire metrics).
pub(crate) async fn fetch<T: Record>(
    tx: &mut Tx<'_>,
    key: &T::Key,
    pick: fn(&Sql) -> &String,
    nowait: Option<Nowait>,
) -> Result<Option<T>> {
    let stmts = statements::<T>(tx)?;
    let sql = pick(stmts);
    let table = T::META.table;
    let Some(kind) = row_lock_kind(stmts, sql) else {
        let span = tracing::debug_span!(
            parent: &tx.span,
            "safesync.record",
            table,
            op = "find",
            key = ?key,
        );
        return fetch_row(tx, key, sql, nowait).instrument(span).await;
    };
    let span = tracing::debug_span!(
        parent: &tx.span,
        "safesync.lock.acquire",
        kind,
        table,
        key = ?key,
        outcome = tracing::field::Empty,
    );
    let start = Instant::now();
    let result = fetch_row(tx, key, sql, nowait)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(Some(_)) => "acquired",
        Ok(None) if kind == "row_skip_locked" => "skipped",
        Ok(None) => "absent",
        Err(Error::LockBusy { .. }) => "busy",
        Err(e) if e.is_lock_wait_timeout() => "timeout",
        Err(_) => "error",
    };
    tx.metrics.lock_acquired(kind, outcome, start.elapsed());
    span.record("outcome", outcome);
    result
}

async fn fetch_row<T: Record>(
    tx: &mut Tx<'_>,
    key: &T::Key,
    sql: &str,
    nowait: Option<Nowait>,
) -> Result<Option<T>> {
    let result: Result<Option<T>> = on_tx!(tx, |conn, DB| {
        let savepoint = nowait.is_some() && <DB as Backend>::ERROR_ABORTS_TRANSACTION;
        if savepoint {
            // A failed statement aborts a Postgres transaction; the savepoint
            // keeps it usable after LockBusy, as it is on MySQL.
            (&mut *conn).execute("SAVEPOINT safesync_nowait").await?;
        }
        let mut args = <DB as Database>::Arguments::default();
        <T as RowCodec<DB>>::bind_key(key, &mut args).map_err(encode_err)?;
        let fetched = (&mut *conn)
            .fetch_optional(sqlx::query_with(sql, args))
            .await;
        if savepoint {
            let undo = if fetched.is_ok() {
                "RELEASE SAVEPOINT safesync_nowait"
            } else {
                "ROLLBACK TO SAVEPOINT safesync_nowait"
            };
            (&mut *conn).execute(undo).await?;
        }
        match fetched {
            Ok(Some(row)) => Ok(Some(<T as RowCodec<DB>>::decode(&row)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        }
    });
    match result {
        Err(Error::Database(e)) if nowait.is_some() => match classify(&e) {
            Some(DbErrorKind::LockWaitTimeout) => Err(Error::LockBusy {
                table: T::META.table,
                key: key_of::<T>(key),
            }),
            _ => Err(Error::Database(e)),
        },
        Err(e) => Err(row_lock_timeout::<T>(tx, || key_of::<T>(key), e)),
        ok => ok,
    }
}

/// Runs the record's key probe: `Ok(None)` when the row is absent,
/// `Ok(Some(version))` when present (0 for records without a version).
pub(crate) async fn probe<T: Record>(tx: &mut Tx<'_>, record: &T) -> Result<Option<i64>> {
    let sql = statements::<T>(tx)?.probe.as_str();
    let versioned = T::META.version.is_some();
    on_tx!(tx, |conn, DB| {
        let mut args = <DB as Database>::Arguments::default();
        <T as RowCodec<DB>>::bind_own_key(record, &mut args).map_err(encode_err)?;
        let row = conn.fetch_optional(sqlx::query_with(sql, args)).await?;
        match row {
            None => Ok(None),
            Some(_) if !versioned => Ok(Some(0)),
            Some(row) => Ok(Some(probe_version(&row)?)),
        }
    })
}

/// Reads a version column of any integer width as `i64`.
fn probe_version<R: sqlx::Row>(row: &R) -> Result<i64>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    if let Ok(v) = row.try_get::<i64, _>(0) {
        return Ok(v);
    }
    if let Ok(v) = row.try_get::<i32, _>(0) {
        return Ok(i64::from(v));
    }
    Ok(i64::from(row.try_get::<i16, _>(0)?))
}

async fn run_insert<T: Record>(record: &T, tx: &mut Tx<'_>, idempotent: bool) -> Result<u64> {
    let stmts = statements::<T>(tx)?;
    let sql = if idempotent {
        stmts.insert_idempotent.as_str()
    } else {
        stmts.insert.as_str()
    };
    let rows: Result<u64> = on_tx!(tx, |conn, DB| {
        let mut args = <DB as Database>::Arguments::default();
        args.reserve(T::META.columns.len(), 0);
        <T as RowCodec<DB>>::bind_all(record, &mut args).map_err(encode_err)?;
        Ok(conn
            .execute(sqlx::query_with(sql, args))
            .await?
            .rows_affected())
    });
    rows.map_err(|e| row_lock_timeout::<T>(tx, || record.key_debug(), e))
}

/// The `safesync.record` span of a write.
fn write_span<T: Table>(tx: &Tx<'_>, op: WriteOp, record: &T) -> tracing::Span {
    tracing::debug_span!(
        parent: &tx.span,
        "safesync.record",
        table = T::META.table,
        op = op.as_str(),
        key = ?KeyOf(record),
        outcome = tracing::field::Empty,
    )
}

/// Counts and times a finished write, and notes its outcome on its span.
fn write_done<T: Table>(
    tx: &Tx<'_>,
    span: &tracing::Span,
    op: WriteOp,
    outcome: WriteOutcome,
    start: Instant,
) {
    tx.metrics
        .write(T::META.table, op, outcome, start.elapsed());
    span.record("outcome", outcome.as_str());
}

pub(crate) async fn insert<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<()> {
    let span = write_span(tx, WriteOp::Insert, record);
    let start = Instant::now();
    let result = insert_row(record, tx).instrument(span.clone()).await;
    let outcome = match &result {
        Ok(()) => WriteOutcome::Ok,
        Err(e) => WriteOutcome::of_error(e),
    };
    write_done::<T>(tx, &span, WriteOp::Insert, outcome, start);
    result
}

async fn insert_row<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<()> {
    match run_insert(record, tx, false).await {
        Ok(_) => Ok(()),
        Err(Error::Database(e)) if classify(&e) == Some(DbErrorKind::Duplicate) => {
            Err(Error::Duplicate {
                table: T::META.table,
                key: record.key_debug(),
                message: e
                    .as_database_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_default(),
            })
        }
        Err(e) => Err(e),
    }
}

pub(crate) async fn insert_idempotent<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<Inserted> {
    let span = write_span(tx, WriteOp::InsertIdempotent, record);
    let start = Instant::now();
    let result = insert_idempotent_row(record, tx)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(Inserted::Inserted) => WriteOutcome::Ok,
        Ok(Inserted::AlreadyExists) => WriteOutcome::AlreadyExists,
        Err(e) => WriteOutcome::of_error(e),
    };
    write_done::<T>(tx, &span, WriteOp::InsertIdempotent, outcome, start);
    result
}

async fn insert_idempotent_row<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<Inserted> {
    match run_insert(record, tx, true).await {
        // ON CONFLICT (key) DO NOTHING: 0 rows means this key existed.
        Ok(0) => Ok(Inserted::AlreadyExists),
        Ok(_) => Ok(Inserted::Inserted),
        // A plain INSERT (no conflict target) failed with a duplicate:
        // only a duplicate of *this* key counts; another unique index's
        // violation stays an error.
        Err(Error::Database(e)) if classify(&e) == Some(DbErrorKind::Duplicate) => {
            let ours = on_tx_backend!(tx, |DB| {
                <DB as Backend>::duplicate_of_key(tx, record, &e).await
            })?;
            if ours {
                Ok(Inserted::AlreadyExists)
            } else {
                Err(Error::Database(e))
            }
        }
        Err(e) => Err(e),
    }
}

/// After an UPDATE/DELETE matched nothing: `NotFound` or `Conflict`.
async fn explain_miss<T: Record>(record: &T, tx: &mut Tx<'_>) -> Error {
    match probe(tx, record).await {
        Err(e) => e,
        Ok(None) => Error::NotFound {
            table: Some(T::META.table),
            key: Some(record.key_debug()),
        },
        Ok(Some(actual)) => Error::Conflict {
            table: T::META.table,
            key: record.key_debug(),
            expected: record.version().unwrap_or_default(),
            actual,
        },
    }
}

pub(crate) async fn update<T: Record>(record: &mut T, tx: &mut Tx<'_>) -> Result<()> {
    let span = write_span(tx, WriteOp::Update, record);
    let start = Instant::now();
    let result = update_row(record, tx).instrument(span.clone()).await;
    let outcome = match &result {
        Ok(()) => WriteOutcome::Ok,
        Err(e) => WriteOutcome::of_error(e),
    };
    write_done::<T>(tx, &span, WriteOp::Update, outcome, start);
    result
}

async fn update_row<T: Record>(record: &mut T, tx: &mut Tx<'_>) -> Result<()> {
    let sql = statements::<T>(tx)?.update.as_str();
    let rows: Result<u64> = on_tx!(tx, |conn, DB| {
        let mut args = <DB as Database>::Arguments::default();
        args.reserve(T::META.columns.len() + 1, 0);
        let r: &T = record;
        <T as RowCodec<DB>>::bind_values(r, &mut args).map_err(encode_err)?;
        <T as RowCodec<DB>>::bind_own_key(r, &mut args).map_err(encode_err)?;
        <T as RowCodec<DB>>::bind_version(r, &mut args).map_err(encode_err)?;
        Ok(conn
            .execute(sqlx::query_with(sql, args))
            .await?
            .rows_affected())
    });
    if rows.map_err(|e| row_lock_timeout::<T>(tx, || record.key_debug(), e))? == 0 {
        return Err(explain_miss(record, tx).await);
    }
    record.bump_version();
    Ok(())
}

pub(crate) async fn delete<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<()> {
    let span = write_span(tx, WriteOp::Delete, record);
    let start = Instant::now();
    let result = delete_row(record, tx).instrument(span.clone()).await;
    let outcome = match &result {
        Ok(()) => WriteOutcome::Ok,
        Err(e) => WriteOutcome::of_error(e),
    };
    write_done::<T>(tx, &span, WriteOp::Delete, outcome, start);
    result
}

async fn delete_row<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<()> {
    let sql = statements::<T>(tx)?.delete.as_str();
    let rows: Result<u64> = on_tx!(tx, |conn, DB| {
        let mut args = <DB as Database>::Arguments::default();
        <T as RowCodec<DB>>::bind_own_key(record, &mut args).map_err(encode_err)?;
        <T as RowCodec<DB>>::bind_version(record, &mut args).map_err(encode_err)?;
        Ok(conn
            .execute(sqlx::query_with(sql, args))
            .await?
            .rows_affected())
    });
    if rows.map_err(|e| row_lock_timeout::<T>(tx, || record.key_debug(), e))? == 0 {
        return Err(explain_miss(record, tx).await);
    }
    Ok(())
}
