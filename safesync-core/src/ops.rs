//! The record operations, written once and run on every backend.

use sqlx::{Arguments as _, Database, Executor as _};

use crate::dialect::{DbErrorKind, Sql, classify};
use crate::error::{Error, Result};
use crate::record::{Inserted, Record, RowCodec, Table};
use crate::tx::{Tx, on_tx};

/// Marks a `NOWAIT` fetch, whose lock failure is [`Error::LockBusy`].
pub(crate) struct Nowait;

fn encode_err(e: sqlx::error::BoxDynError) -> Error {
    Error::Database(sqlx::Error::Encode(e))
}

fn key_of<T: Table>(key: &T::Key) -> String {
    format!("{key:?}")
}

pub(crate) async fn fetch<T: Record>(
    tx: &mut Tx<'_>,
    key: &T::Key,
    pick: fn(&Sql) -> &String,
    nowait: Option<Nowait>,
) -> Result<Option<T>> {
    let sql = pick(T::statements().get(tx.dialect(), T::META)).as_str();
    let savepoint = nowait.is_some() && tx.dialect() == crate::Dialect::Postgres;
    let result: Result<Option<T>> = on_tx!(tx, |conn, DB| {
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
            Some(DbErrorKind::LockNotAvailable | DbErrorKind::LockWaitTimeout) => {
                Err(Error::LockBusy {
                    table: T::META.table,
                    key: key_of::<T>(key),
                })
            }
            _ => Err(Error::Database(e)),
        },
        other => other,
    }
}

/// Runs the record's key probe: `Ok(None)` when the row is absent,
/// `Ok(Some(version))` when present (0 for records without a version).
async fn probe<T: Record>(tx: &mut Tx<'_>, record: &T) -> Result<Option<i64>> {
    let sql = T::statements().get(tx.dialect(), T::META).probe.as_str();
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
    let stmts = T::statements().get(tx.dialect(), T::META);
    let sql = if idempotent {
        stmts.insert_idempotent.as_str()
    } else {
        stmts.insert.as_str()
    };
    on_tx!(tx, |conn, DB| {
        let mut args = <DB as Database>::Arguments::default();
        args.reserve(T::META.columns.len(), 0);
        <T as RowCodec<DB>>::bind_all(record, &mut args).map_err(encode_err)?;
        Ok(conn
            .execute(sqlx::query_with(sql, args))
            .await?
            .rows_affected())
    })
}

pub(crate) async fn insert<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<()> {
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
    match run_insert(record, tx, true).await {
        // ON CONFLICT (key) DO NOTHING: 0 rows means this key existed.
        Ok(0) => Ok(Inserted::AlreadyExists),
        Ok(_) => Ok(Inserted::Inserted),
        // MySQL: a plain INSERT failed with 1062. Only a duplicate of *this*
        // key counts; another unique index's violation stays an error.
        Err(Error::Database(e)) if classify(&e) == Some(DbErrorKind::Duplicate) => {
            if tx.dialect() == crate::Dialect::MySql && probe(tx, record).await?.is_some() {
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
    let sql = T::statements().get(tx.dialect(), T::META).update.as_str();
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
    if rows? == 0 {
        return Err(explain_miss(record, tx).await);
    }
    record.bump_version();
    Ok(())
}

pub(crate) async fn delete<T: Record>(record: &T, tx: &mut Tx<'_>) -> Result<()> {
    let sql = T::statements().get(tx.dialect(), T::META).delete.as_str();
    let rows: Result<u64> = on_tx!(tx, |conn, DB| {
        let mut args = <DB as Database>::Arguments::default();
        <T as RowCodec<DB>>::bind_own_key(record, &mut args).map_err(encode_err)?;
        <T as RowCodec<DB>>::bind_version(record, &mut args).map_err(encode_err)?;
        Ok(conn
            .execute(sqlx::query_with(sql, args))
            .await?
            .rows_affected())
    });
    if rows? == 0 {
        return Err(explain_miss(record, tx).await);
    }
    Ok(())
}
