//! Fencing tokens of named locks.
//!
//! A named lock is lost with its connection, and its holder may not notice
//! before it writes. Fencing closes that gap for writes to the database
//! that keeps the tokens:
//!
//! 1. Every [`Db::advisory_lock`] (and `try_`/`_with`) takes the lock,
//!    then, still holding it, adds one to the name's row of the table
//!    `safesync_fence (name PRIMARY KEY, token)` in a transaction of its
//!    own (creating the table the first time a `Db` needs it). The new
//!    value is the guard's [`token`](AdvisoryLock::token): the lock
//!    excludes every other holder while it is issued, so it is greater
//!    than every token issued before for the name, by any process.
//! 2. [`Tx::fence`] reads the name's current token with a shared row lock
//!    (PostgreSQL `FOR SHARE`, MySQL/MariaDB `LOCK IN SHARE MODE`; on
//!    SQLite the transaction already holds the database's write lock) and
//!    fails with [`Error::Fenced`] when it is greater than the guard's.
//! 3. A later acquisition's increment (step 1) needs that row (SQLite: the
//!    write lock), so it waits until the fenced transaction commits or
//!    rolls back: a check that passed stays true until the commit. The
//!    wait is bounded by the acquiring `Db`'s
//!    [`lock_timeout`](crate::DbOptions::lock_timeout); past it the
//!    acquisition fails with [`Error::LockTimeout`] and frees the lock.

use tracing::Instrument as _;

use super::{AdvisoryLock, Held};
use crate::backend::{Backend, on_pool, on_tx};
use crate::db::Db;
use crate::error::{Error, LockWait, Result};
use crate::tx::Tx;

/// The table of fencing tokens, for messages.
const TABLE: &str = "safesync_fence";

impl Db {
    /// Issues the next fencing token of `name`, whose lock `held` is;
    /// releases the lock when that fails (a guard without a token would
    /// fence nothing).
    pub(super) async fn issue_token(&self, name: &str, held: Held) -> Result<(Held, u64)> {
        match self.next_token(name).await {
            Ok(token) => Ok((held, token)),
            Err(e) => {
                if let Err(release) = held.session.release(self.lock_conns()).await {
                    tracing::debug!(lock = name, error = %release, "releasing a lock without a token failed; its connection is closed");
                }
                Err(e)
            }
        }
    }

    /// Adds one to the token of `name` in a transaction of its own.
    async fn next_token(&self, name: &str) -> Result<u64> {
        self.ensure_fence_table().await?;
        let mut tx = self.begin().await?;
        let next = on_tx!(tx, |conn, DB| {
            <DB as Backend>::fence_next(conn, &<DB as Backend>::fence_key(name)).await
        })
        .map_err(|e| row_wait(name, self.lock_timeout(), e))?;
        tx.commit().await?;
        token_value(name, next)
    }

    /// Creates `safesync_fence` when missing, once per `Db` (and its clones).
    async fn ensure_fence_table(&self) -> Result<()> {
        let ddl = on_pool!(self.pool(), |_p, DB| <DB as Backend>::FENCE_DDL);
        self.fence_table()
            .get_or_try_init(|| async {
                match self.execute(ddl).await {
                    Ok(_) => Ok(()),
                    // Two processes creating the table at once: on
                    // PostgreSQL the loser gets a unique violation on the
                    // catalog. The table exists now; a second try says so.
                    Err(first) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        self.execute(ddl).await.map(|_| ()).map_err(|_| first)
                    }
                }
            })
            .await?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Checks, inside the transaction that writes what `guard`'s lock
    /// protects, that no holder took the lock after `guard`: fails with
    /// [`Error::Fenced`] when a newer [`token`](AdvisoryLock::token) of
    /// the name exists. Roll the transaction back then (dropping it does).
    ///
    /// **What it guarantees.** When `fence` returns `Ok`, no acquisition
    /// of the name after `guard`'s can complete until this transaction
    /// commits or rolls back (the next acquisition waits for it, bounded
    /// by that `Db`'s [`lock_timeout`](crate::DbOptions::lock_timeout)).
    /// So every write of this transaction to this database commits before
    /// any later holder gets its token: a holder that lost its lock
    /// without noticing (its connection killed, a network partition, a
    /// long pause) cannot write after its successor. The order of the
    /// writes and the `fence` call inside the transaction does not matter;
    /// only the commit does.
    ///
    /// **What it does not.** It protects writes made in this transaction,
    /// to the database the tokens are kept in (the lock's `Db`): not other
    /// databases, files, Redis, emails or HTTP calls, and not writes
    /// committed in other transactions. It says nothing about whether
    /// `guard` still holds the lock right now: a lock lost while nobody
    /// took it after passes (nobody else wrote under it). The transaction
    /// must be on the same database as the `Db` that took the lock (the
    /// tokens are per database; on an in-memory SQLite database, per
    /// that database).
    ///
    /// | backend | how the check is held until commit |
    /// |---|---|
    /// | PostgreSQL | `SELECT … FOR SHARE` on the name's row of `safesync_fence` |
    /// | MySQL/MariaDB | `SELECT … LOCK IN SHARE MODE` on the same row |
    /// | SQLite | the database's write lock, which every safesync transaction holds from `begin` (`BEGIN IMMEDIATE`) |
    ///
    /// Waiting for the row (an acquisition issuing its token right now)
    /// is bounded by this transaction's lock timeout, as any row lock.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use safesync_core::{Db, Error};
    ///
    /// let db = Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE report (day TEXT PRIMARY KEY, body TEXT)").await?;
    ///
    /// let guard = db.advisory_lock("nightly-report", Duration::from_secs(1)).await?;
    /// let mut tx = db.begin().await?;
    /// tx.execute_with("INSERT INTO report VALUES (?, ?)", ("2026-12-01", "ok")).await?;
    /// match tx.fence(&guard).await {
    ///     // No holder after this one: the insert may commit.
    ///     Ok(()) => tx.commit().await?,
    ///     // Someone took the lock since: drop the transaction (a rollback).
    ///     Err(Error::Fenced { current, .. }) => println!("fenced off by token {current}"),
    ///     Err(e) => return Err(e),
    /// }
    /// guard.release().await?;
    /// # Ok::<_, Error>(()) }).unwrap();
    /// ```
    pub async fn fence(&mut self, guard: &AdvisoryLock) -> Result<()> {
        let name = guard.name();
        let token = guard.token();
        let span = tracing::debug_span!(
            parent: &self.span,
            "safesync.lock.fence",
            lock = name,
            token,
            current = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let lock_timeout = self.db.lock_timeout();
        let current = on_tx!(self, |conn, DB| {
            <DB as Backend>::fence_current(conn, &<DB as Backend>::fence_key(name))
                .instrument(span.clone())
                .await
        })
        .map_err(|e| row_wait(name, lock_timeout, e));
        let verdict = current.and_then(|current| {
            if let Some(c) = current {
                span.record("current", c);
            }
            verdict(name, token, current)
        });
        let outcome = match &verdict {
            Ok(()) => "passed",
            Err(Error::Fenced { .. }) => "fenced",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        if outcome == "fenced" {
            self.metrics.lock_fenced(guard.metric_kind);
        }
        verdict
    }
}

/// Whether a guard with `token` may write, given the name's `current`
/// token in the database (`None`: no row): only when they are equal.
fn verdict(name: &str, token: u64, current: Option<i64>) -> Result<()> {
    let Some(current) = current else {
        return Err(Error::NotFound {
            table: Some(TABLE),
            key: Some(format!("{name:?} (the fencing token's row is gone)")),
        });
    };
    let current = token_value(name, current)?;
    if current < token {
        return Err(Error::Decode {
            what: format!("the fencing token of named lock `{name}` in `{TABLE}`"),
            reason: format!(
                "the database has {current}, below this guard's {token}: the table lost tokens \
                 (restored or edited), so a later holder may get the same one"
            ),
        });
    }
    if current > token {
        return Err(Error::Fenced {
            name: name.to_owned(),
            token,
            current,
        });
    }
    Ok(())
}

/// A token read from the database, which only ever counts up from 1.
fn token_value(name: &str, raw: i64) -> Result<u64> {
    u64::try_from(raw).map_err(|_| Error::Decode {
        what: format!("the fencing token of named lock `{name}` in `{TABLE}`"),
        reason: format!("{raw} is negative"),
    })
}

/// A row-lock wait on the name's fence row that gave up, as the
/// [`Error::LockTimeout`] of that row; any other error as it is.
fn row_wait(name: &str, waited: std::time::Duration, e: Error) -> Error {
    if e.is_lock_wait_timeout() {
        Error::LockTimeout {
            name: format!("`{TABLE}` key {name:?}"),
            waited,
            what: LockWait::Row,
        }
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;
    use crate::error::Error;

    #[test]
    fn only_a_newer_token_fences() {
        assert!(verdict("job", 7, Some(7)).is_ok());
        let err = verdict("job", 7, Some(8)).unwrap_err();
        assert!(
            matches!(&err, Error::Fenced { name, token: 7, current: 8 } if name == "job"),
            "{err:?}"
        );
        // A database behind a token it issued lost tokens (restored or
        // edited): a later holder may get this very token, so nothing is
        // proven.
        assert!(matches!(
            verdict("job", 7, Some(3)),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn a_missing_row_or_a_negative_token_is_an_error_not_a_pass() {
        assert!(matches!(
            verdict("job", 1, None),
            Err(Error::NotFound {
                table: Some("safesync_fence"),
                ..
            })
        ));
        assert!(matches!(
            verdict("job", 1, Some(-1)),
            Err(Error::Decode { .. })
        ));
    }
}
