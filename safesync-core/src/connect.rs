//! Connecting fast, with the real cause.
//!
//! sqlx's pool retries a refused connection until its acquire timeout and
//! then reports only "pool timed out". [`Db::connect`](crate::Db::connect)
//! instead opens one connection first, under
//! [`DbOptions::connect_timeout`](crate::DbOptions::connect_timeout):
//!
//! 1. Connect. Success: close that connection and build the pool (lazily:
//!    it connects again on first use, now known to work).
//! 2. A refused connection, or an error the server calls transient while
//!    it starts up, is retried with a doubling pause (20 ms, 40 ms, …) as
//!    long as the next attempt still starts within the timeout.
//! 3. Any other error — a name that does not resolve, a login the server
//!    refuses, TLS — is final at once.
//! 4. When the timeout passes, the last error is the answer (for example
//!    "Connection refused"), or, if no attempt has answered yet, a timeout
//!    naming how long was waited.
//!
//! The URL in the error has its password replaced by `***`.

use std::time::{Duration, Instant};

use sqlx::ConnectOptions;

use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// Whether a connect error may go away by itself soon (a server starting).
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        sqlx::Error::Database(db) => db.is_transient_in_connect_phase(),
        _ => false,
    }
}

/// One connection, tried as the module doc says, within `budget`.
async fn first_connection<O: ConnectOptions<Connection: Sized>>(
    options: &O,
    budget: Duration,
) -> Result<O::Connection, sqlx::Error> {
    let deadline = Instant::now() + budget;
    let backoff = Backoff::new(Duration::from_millis(20), budget);
    let mut last = None;
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        let pause = backoff.cap(attempt);
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, options.connect()).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(last.unwrap_or_else(|| {
                    sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within the connect timeout of {budget:?}"),
                    ))
                }));
            }
        };
        if !transient(&error) || Instant::now() + pause >= deadline {
            return Err(error);
        }
        last = Some(error);
        tokio::time::sleep(pause).await;
    }
}

/// [`Error::TlsNotTrusted`] when the server's certificate was refused,
/// otherwise [`Error::Connect`].
fn connect_error(source: sqlx::Error, redacted: &str) -> Error {
    #[cfg(feature = "tls")]
    if let Some(reason) = crate::tls::not_trusted(&source) {
        return Error::TlsNotTrusted {
            target: redacted.to_owned(),
            reason,
            source: Box::new(source),
        };
    }
    Error::Connect {
        url: redacted.to_owned(),
        source,
    }
}

/// A pool of `options`' database once one connection to it has worked;
/// otherwise [`Error::Connect`] (or [`Error::TlsNotTrusted`]) with the cause
/// and the `redacted` URL.
pub(crate) async fn pool<DB: sqlx::Database>(
    pool: sqlx::pool::PoolOptions<DB>,
    options: <DB::Connection as sqlx::Connection>::Options,
    budget: Duration,
    redacted: &str,
) -> Result<sqlx::Pool<DB>> {
    let conn = first_connection(&options, budget)
        .await
        .map_err(|source| connect_error(source, redacted))?;
    // A clean close; failing to say goodbye does not make the server
    // unreachable.
    let _ = sqlx::Connection::close(conn).await;
    Ok(pool.connect_lazy_with(options))
}
