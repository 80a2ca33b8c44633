//! Runtime of [safesync](https://docs.rs/safesync): the [`Db`] pool over
//! SQLite, MySQL/MariaDB and PostgreSQL, transactions ([`Tx`]), the record
//! traits the derives implement ([`Record`], [`Versioned`], [`Locked`]),
//! retries ([`RetryPolicy`]), Prometheus [`Metrics`] and the one [`Error`]
//! type.
//!
//! Users depend on the `safesync` facade crate, not on this one.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use safesync_core::Db;
//!
//! let db = Db::connect("sqlite::memory:").await?;
//! let tx = db.begin().await?;
//! tx.commit().await?;
//! # Ok::<_, safesync_core::Error>(()) }).unwrap();
//! ```

#[cfg(not(any(feature = "sqlite", feature = "mysql", feature = "postgres")))]
compile_error!("safesync needs at least one backend feature: `sqlite`, `mysql` or `postgres`");

mod backend;
mod backoff;
mod connect;
mod db;
mod error;
mod field;
mod held;
mod ledger;
mod lock;
mod metrics;
mod ops;
mod outbox;
mod query;
mod record;
mod redact;
mod retry;
mod schema;
mod sql;
#[cfg(feature = "tls")]
mod tls;
mod tx;

pub use backend::Dialect;
pub use db::{Db, DbOptions};
pub use error::{Error, LockWait, Result};
pub use held::Held;
pub use lock::{AdvisoryLock, HeldNamedLock, LockOptions, advisory_key};
pub use metrics::Metrics;
pub use query::{Params, Scalar, Select, Value};
pub use record::{Inserted, Locked, Record, Table, Versioned};
pub use retry::RetryPolicy;
pub use schema::{ColumnType, Mismatch, SqlType};
pub use tx::Tx;

/// Items the derive macros' generated code names. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::backoff::Backoff;
    pub use crate::field::{MySqlColumn, PgColumn, SqliteColumn};
    pub use crate::record::{
        Codecs, RowCodec, Statements, TableMeta, Unversioned, VersionChecked, VersionInt,
        VersionedDerived,
    };
    /// The queue ledger's SQL on a `Db`'s backend.
    pub mod ledger {
        pub use crate::ledger::{Row, ddl, insert, insert_all, prune_sql, retry_recorded};
    }
    /// The queue outbox's SQL on a `Db`'s backend.
    pub mod outbox {
        pub use crate::outbox::{OutboxRow, claim, ddl, streams};
    }
    pub use crate::redact::redact_url;
    pub use crate::schema::{ColumnDef, SchemaMeta, SqlType, TableSchema};
    /// Why the server's TLS certificate was refused, if `err` says it was
    /// (the queue names it in [`Error::TlsNotTrusted`](crate::Error::TlsNotTrusted)).
    #[cfg(feature = "tls")]
    pub use crate::tls::not_trusted;
    pub use crate::{Locked, Record, Table, Versioned};
    pub use futures_core::future::BoxFuture;
    pub use prometheus;
    pub use sqlx;

    /// `#[transactional]`: boxes the future of one attempt, so the closure
    /// given to `Db::transaction`/`Db::retry` returns a `BoxFuture` without
    /// the generated code naming `Box`.
    pub fn box_future<'t, T>(future: impl Future<Output = T> + Send + 't) -> BoxFuture<'t, T> {
        Box::pin(future)
    }

    /// `#[transactional(retry)]`: what an argument must be to be handed to
    /// every attempt. Shared references are passed as they are; everything
    /// else is cloned per attempt.
    #[diagnostic::on_unimplemented(
        message = "argument of type `{Self}` of a `#[transactional(retry)]` fn is passed to every attempt, so it must be `Clone` or a shared reference",
        label = "not `Clone`: derive or implement `Clone`, or take `&{Self}`",
        note = "every attempt runs in a new transaction and gets its own copy of the arguments"
    )]
    pub trait RetryArg: Sized {
        /// One attempt's copy of the argument.
        #[must_use]
        fn per_attempt(&self) -> Self;
    }

    impl<T: Clone> RetryArg for T {
        fn per_attempt(&self) -> Self {
            self.clone()
        }
    }

    /// `#[transactional(retry)]`: the fn's return type, which must carry
    /// safesync's [`Error`](crate::Error) for the retry to classify it.
    #[diagnostic::on_unimplemented(
        message = "a `#[transactional(retry)]` fn returns `Result<T, safesync::Error>`, not `{Self}`",
        label = "`retry` needs `safesync::Error` here",
        note = "retry decides from safesync's error kinds (conflict, deadlock, busy) what is safe to run again; without `retry` any error type that implements `From<safesync::Error>` works"
    )]
    pub trait RetryResult: Sized {
        /// The `Ok` type.
        type Ok;
        /// Into what `Db::retry` takes.
        fn into_result(self) -> crate::Result<Self::Ok>;
        /// From what `Db::retry` returns.
        fn from_result(result: crate::Result<Self::Ok>) -> Self;
    }

    impl<T> RetryResult for crate::Result<T> {
        type Ok = T;
        fn into_result(self) -> crate::Result<T> {
            self
        }
        fn from_result(result: crate::Result<T>) -> Self {
            result
        }
    }

    /// Adds the column's name to a decode error, so the message says which
    /// field failed.
    pub fn column_error(err: sqlx::Error, meta: &TableMeta, index: usize) -> sqlx::Error {
        match err {
            sqlx::Error::ColumnDecode { source, .. } => sqlx::Error::ColumnDecode {
                index: format!(
                    "`{}` (column {index} of `{}`)",
                    meta.columns.get(index).copied().unwrap_or("?"),
                    meta.table
                ),
                source,
            },
            other => other,
        }
    }
}
