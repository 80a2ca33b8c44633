//! [`Held`]: a row this transaction locked, the only way to write a record
//! that has no version column.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::error::{Error, Result};
use crate::ops;
use crate::record::Record;
use crate::tx::{Tx, TxId};

/// A row locked by [`Locked::lock`](crate::Locked::lock),
/// [`lock_nowait`](crate::Locked::lock_nowait) or
/// [`lock_skip_locked`](crate::Locked::lock_skip_locked) in one
/// transaction, held until that transaction ends.
///
/// It dereferences to the record, so fields read and change as usual, and
/// it has [`update`](Held::update) and [`delete`](Held::delete): for a
/// record without a version column these are the only writes besides the
/// deliberately blind [`Record::overwrite`], because a row read with `find`
/// and written back by key loses every update made in between. Using a held
/// row in another transaction than the one that locked it is
/// [`Error::NotHeld`] before any SQL runs.
///
/// ```
/// # use safesync_core::{Db, Error, Locked as _, Record as _};
/// # use safesync_macros::Locked;
/// #[derive(Debug, Locked)]
/// #[safesync(table = "counters")]
/// # #[safesync(crate = "safesync_core")]
/// struct Counter {
///     #[safesync(key)]
///     name: String,
///     hits: i64,
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = Db::connect("sqlite::memory:").await?;
/// db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, hits BIGINT NOT NULL)").await?;
/// let mut tx = db.begin().await?;
/// Counter { name: "home".into(), hits: 0 }.insert(&mut tx).await?;
/// tx.commit().await?;
///
/// let mut tx = db.begin().await?;
/// let mut c = Counter::lock(&mut tx, &"home".to_owned()).await?.ok_or_else(Error::not_found)?;
/// c.hits += 1; // `Held<Counter>` dereferences to `Counter`
/// c.update(&mut tx).await?;
/// tx.commit().await?;
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub struct Held<T> {
    row: T,
    tx: TxId,
}

impl<T> Held<T> {
    pub(crate) fn new(row: T, tx: TxId) -> Self {
        Held { row, tx }
    }

    /// The record, no longer held: it can be read and kept, but a record
    /// without a version column can no longer be written from it.
    ///
    /// ```
    /// # use safesync_core::{Error, Locked as _, Tx};
    /// # use safesync_macros::Locked;
    /// # #[derive(Debug, Locked)]
    /// # #[safesync(table = "counters", crate = "safesync_core")]
    /// # struct Counter { #[safesync(key)] name: String, hits: i64 }
    /// # async fn demo(tx: &mut Tx<'_>) -> Result<(), Error> {
    /// let held = Counter::lock(tx, &"home".to_owned()).await?.ok_or_else(Error::not_found)?;
    /// let counter: Counter = held.into_inner();
    /// # let _ = counter; Ok(()) }
    /// ```
    pub fn into_inner(self) -> T {
        self.row
    }
}

impl<T: Record> Held<T> {
    /// `Err(NotHeld)` unless `tx` is the transaction that locked the row.
    fn check(&self, tx: &Tx<'_>) -> Result<()> {
        if tx.id() == self.tx {
            Ok(())
        } else {
            Err(Error::NotHeld {
                table: T::META.table,
                key: self.row.key_debug(),
            })
        }
    }

    /// Writes every non-key column back, under the row lock. A versioned
    /// record still checks and advances its version, as
    /// [`Record::update`] does. [`Error::NotHeld`] when `tx` is not the
    /// transaction that locked the row.
    ///
    /// ```
    /// # use safesync_core::{Error, Locked as _, Tx};
    /// # use safesync_macros::Locked;
    /// # #[derive(Debug, Locked)]
    /// # #[safesync(table = "counters", crate = "safesync_core")]
    /// # struct Counter { #[safesync(key)] name: String, hits: i64 }
    /// # async fn demo(tx: &mut Tx<'_>) -> Result<(), Error> {
    /// let mut c = Counter::lock(tx, &"home".to_owned()).await?.ok_or_else(Error::not_found)?;
    /// c.hits += 1;
    /// c.update(tx).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        self.check(tx)?;
        ops::update(&mut self.row, tx).await
    }

    /// Deletes the row, under the row lock (a versioned record: only at its
    /// version). [`Error::NotHeld`] when `tx` is not the transaction that
    /// locked the row.
    ///
    /// ```
    /// # use safesync_core::{Error, Locked as _, Tx};
    /// # use safesync_macros::Locked;
    /// # #[derive(Debug, Locked)]
    /// # #[safesync(table = "counters", crate = "safesync_core")]
    /// # struct Counter { #[safesync(key)] name: String, hits: i64 }
    /// # async fn demo(tx: &mut Tx<'_>) -> Result<(), Error> {
    /// let c = Counter::lock(tx, &"home".to_owned()).await?.ok_or_else(Error::not_found)?;
    /// c.delete(tx).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(self, tx: &mut Tx<'_>) -> Result<()> {
        self.check(tx)?;
        ops::delete(&self.row, tx).await
    }
}

impl<T> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.row
    }
}

impl<T> DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.row
    }
}

impl<T: fmt::Debug> fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Held").field(&self.row).finish()
    }
}
