//! The connection of a transaction: one that sqlx began and tracks, or one
//! that safesync began itself with statements sent together with `BEGIN`
//! (the queue's ledger row), which sqlx's own `begin` cannot do.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;

/// A transaction's connection.
pub(crate) enum TxConn<'c, DB: sqlx::Database> {
    /// Begun, committed and rolled back by sqlx.
    Sqlx(sqlx::Transaction<'c, DB>),
    /// Begun by statements of safesync's own, which sqlx does not know of.
    Own(OwnTx<DB>),
}

/// A pooled connection inside a transaction that safesync began with
/// statements of its own: committed and rolled back here; dropped while
/// still inside it (a panic, a cancelled future), the connection is closed,
/// which rolls the transaction back, instead of going back to the pool.
pub(crate) struct OwnTx<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    open: bool,
}

impl<DB: sqlx::Database> OwnTx<DB> {
    /// `conn`, on which a transaction has just begun.
    pub(crate) fn begun(conn: PoolConnection<DB>) -> Self {
        OwnTx { conn, open: true }
    }

    /// The connection, to send `COMMIT` or `ROLLBACK` on.
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }

    /// The transaction ended (`COMMIT` or `ROLLBACK` succeeded): the
    /// connection may go back to the pool. Until then (an error included)
    /// it is closed when dropped.
    pub(crate) fn ended(mut self) {
        self.open = false;
    }
}

impl<DB: sqlx::Database> Drop for OwnTx<DB> {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

impl<DB: sqlx::Database> Deref for TxConn<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self {
            TxConn::Sqlx(t) => t,
            TxConn::Own(own) => &own.conn,
        }
    }
}

impl<DB: sqlx::Database> DerefMut for TxConn<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            TxConn::Sqlx(t) => t,
            TxConn::Own(own) => &mut own.conn,
        }
    }
}
