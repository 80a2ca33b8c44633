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
//! db.execute(
//!     "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL,
//!      balance BIGINT NOT NULL, version BIGINT NOT NULL)",
//! )
//! .await?;
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
//! - `mysql`: MySQL 8 and MariaDB 10.6+.
//! - `postgres`: PostgreSQL 13+.

pub use safesync_core::{
    Db, DbOptions, Dialect, Error, Inserted, Locked, Record, Result, RetryPolicy, Table, Tx,
    Versioned,
};
/// The derives share their names with the traits they implement.
pub use safesync_macros::{Locked, Versioned};

/// The sqlx version safesync is built on, for queries of your own.
pub use safesync_core::__private::sqlx;

/// Everything a user of the derives needs: `use safesync::prelude::*;`.
pub mod prelude {
    pub use crate::{Db, DbOptions, Error, Inserted, Locked, Record, RetryPolicy, Tx, Versioned};
}

#[doc(hidden)]
pub mod __private {
    pub use safesync_core::__private::*;
}
