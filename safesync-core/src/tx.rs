//! Transactions.

use tokio::sync::OwnedMutexGuard;

use crate::dialect::Dialect;
use crate::error::Result;

/// A database transaction on any backend.
///
/// Dropped without [`commit`](Tx::commit) it rolls back, also when the task
/// holding it panics. Record operations and row locks take `&mut Tx`, so they
/// cannot run outside a transaction.
///
/// On SQLite every transaction is `BEGIN IMMEDIATE`: it holds the database's
/// write lock from its first statement, and transactions of one [`Db`](crate::Db)
/// queue for it in order instead of polling the busy handler.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = safesync_core::Db::connect("sqlite::memory:").await?;
/// let tx = db.begin().await?;
/// tx.commit().await?;
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub struct Tx<'c> {
    // Field order matters: the transaction is dropped (and its rollback
    // queued) before the SQLite write gate opens.
    pub(crate) inner: TxInner<'c>,
    _gate: Option<OwnedMutexGuard<()>>,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

pub(crate) enum TxInner<'c> {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'c, sqlx::Sqlite>),
    #[cfg(feature = "mysql")]
    MySql(sqlx::Transaction<'c, sqlx::MySql>),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'c, sqlx::Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection and `$DB`
/// to its sqlx database type, on whichever backend the transaction is.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident, $DB:ident| $body:expr) => {
        match &mut $tx.inner {
            #[cfg(feature = "sqlite")]
            $crate::tx::TxInner::Sqlite(t) => {
                #[allow(clippy::upper_case_acronyms, dead_code)]
                type $DB = sqlx::Sqlite;
                let $conn: &mut sqlx::SqliteConnection = &mut **t;
                $body
            }
            #[cfg(feature = "mysql")]
            $crate::tx::TxInner::MySql(t) => {
                #[allow(clippy::upper_case_acronyms, dead_code)]
                type $DB = sqlx::MySql;
                let $conn: &mut sqlx::MySqlConnection = &mut **t;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::tx::TxInner::Postgres(t) => {
                #[allow(clippy::upper_case_acronyms, dead_code)]
                type $DB = sqlx::Postgres;
                let $conn: &mut sqlx::PgConnection = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

impl<'c> Tx<'c> {
    pub(crate) fn new(inner: TxInner<'c>, gate: Option<OwnedMutexGuard<()>>) -> Self {
        Tx { inner, _gate: gate }
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        match self.inner {
            #[cfg(feature = "sqlite")]
            TxInner::Sqlite(t) => t.commit().await?,
            #[cfg(feature = "mysql")]
            TxInner::MySql(t) => t.commit().await?,
            #[cfg(feature = "postgres")]
            TxInner::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Rolls the transaction back (dropping it does the same).
    pub async fn rollback(self) -> Result<()> {
        match self.inner {
            #[cfg(feature = "sqlite")]
            TxInner::Sqlite(t) => t.rollback().await?,
            #[cfg(feature = "mysql")]
            TxInner::MySql(t) => t.rollback().await?,
            #[cfg(feature = "postgres")]
            TxInner::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }

    /// The backend's SQL dialect.
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            #[cfg(feature = "sqlite")]
            TxInner::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "mysql")]
            TxInner::MySql(_) => Dialect::MySql,
            #[cfg(feature = "postgres")]
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection of this transaction, for queries of your own.
    #[cfg(feature = "sqlite")]
    pub fn as_sqlite(&mut self) -> Option<&mut sqlx::SqliteConnection> {
        match &mut self.inner {
            TxInner::Sqlite(t) => Some(&mut **t),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The MySQL connection of this transaction, for queries of your own.
    #[cfg(feature = "mysql")]
    pub fn as_mysql(&mut self) -> Option<&mut sqlx::MySqlConnection> {
        match &mut self.inner {
            TxInner::MySql(t) => Some(&mut **t),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The Postgres connection of this transaction, for queries of your own.
    #[cfg(feature = "postgres")]
    pub fn as_postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match &mut self.inner {
            TxInner::Postgres(t) => Some(&mut **t),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Runs SQL with no parameters (several statements allowed) inside this
    /// transaction; returns the rows affected. For DDL and fixed statements:
    /// values belong in bound parameters through the typed calls.
    pub async fn execute(&mut self, sql: &str) -> Result<u64> {
        use sqlx::Executor as _;
        Ok(on_tx!(self, |conn, DB| conn
            .execute(sqlx::raw_sql(sql))
            .await?
            .rows_affected()))
    }
}
