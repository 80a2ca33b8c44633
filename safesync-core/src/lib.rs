//! Runtime of [safesync](https://docs.rs/safesync): the [`Db`] pool over
//! SQLite, MySQL/MariaDB and PostgreSQL, transactions ([`Tx`]), the record
//! traits the derives implement ([`Record`], [`Versioned`], [`Locked`]),
//! retries ([`RetryPolicy`]) and the one [`Error`] type.
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

mod db;
mod dialect;
mod error;
mod ops;
mod record;
mod redact;
mod retry;
mod tx;

pub use db::{Db, DbOptions};
pub use dialect::Dialect;
pub use error::{Error, Result};
pub use record::{Inserted, Locked, Record, Table, Versioned};
pub use retry::RetryPolicy;
pub use tx::Tx;

/// Items the derive macros' generated code names. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::record::{
        Codecs, RowCodec, Statements, TableMeta, VersionInt, VersionedDerived,
    };
    pub use crate::{Locked, Table, Versioned};
    pub use futures_core::future::BoxFuture;
    pub use sqlx;

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
