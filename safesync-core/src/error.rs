//! The one error type of safesync.

use std::fmt;
use std::time::Duration;

/// Shorthand for `Result<T, safesync::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure safesync reports, as variants a caller can match.
///
/// Messages name the table, the key and the versions involved, so a log line
/// alone tells which row lost a race.
///
/// ```
/// use safesync_core::Error;
///
/// let err = Error::Conflict { table: "accounts", key: "7".into(), expected: 3, actual: 4 };
/// assert!(err.is_retryable());
/// assert_eq!(
///     err.to_string(),
///     "version conflict on `accounts` key 7: expected version 3, the row is at version 4"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A versioned `update` or `delete` found the row at another version than
    /// the one it was read at: someone else wrote it in between.
    #[error(
        "version conflict on `{table}` key {key}: expected version {expected}, the row is at version {actual}"
    )]
    Conflict {
        /// Table of the record.
        table: &'static str,
        /// The key, as `Debug` prints it.
        key: String,
        /// The version the caller held.
        expected: i64,
        /// The version the row had when the conflict was detected.
        actual: i64,
    },

    /// The row (or thing) asked for does not exist.
    #[error("{}", NotFoundDisplay { table: *table, key: key.as_deref() })]
    NotFound {
        /// Table of the record, when known.
        table: Option<&'static str>,
        /// The key, as `Debug` prints it, when known.
        key: Option<String>,
    },

    /// A plain `insert` hit a row with the same key.
    #[error("duplicate key inserting into `{table}` (key {key}): {message}")]
    Duplicate {
        /// Table of the record.
        table: &'static str,
        /// The key, as `Debug` prints it.
        key: String,
        /// The database's own message, naming the constraint.
        message: String,
    },

    /// `lock_nowait` found the row locked by another transaction.
    #[error("row in `{table}` with key {key} is locked by another transaction")]
    LockBusy {
        /// Table of the record.
        table: &'static str,
        /// The key, as `Debug` prints it.
        key: String,
    },

    /// A [`Held`](crate::Held) row was written in another transaction than
    /// the one that locked it: that transaction's lock protects nothing here.
    #[error(
        "row in `{table}` with key {key} is not locked by this transaction: lock it again in the transaction that writes it"
    )]
    NotHeld {
        /// Table of the record.
        table: &'static str,
        /// The key, as `Debug` prints it.
        key: String,
    },

    /// A lock could not be taken within its timeout: a named lock
    /// ([`Db::advisory_lock`](crate::Db::advisory_lock)), a row
    /// ([`Locked::lock`](crate::Locked::lock), bounded by
    /// [`DbOptions::lock_timeout`](crate::DbOptions::lock_timeout)) or
    /// SQLite's write lock at [`Db::begin`](crate::Db::begin).
    ///
    /// ```
    /// use std::time::Duration;
    /// use safesync_core::{Error, LockWait};
    ///
    /// let err = Error::LockTimeout {
    ///     name: "`accounts` key 7".into(),
    ///     waited: Duration::from_secs(10),
    ///     what: LockWait::Row,
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "row of `accounts` key 7 is locked by another transaction; gave up after 10s"
    /// );
    /// ```
    #[error("{}", LockTimeoutDisplay { name, waited: *waited, what: *what })]
    LockTimeout {
        /// The named lock's name; for a row, its table and key
        /// (`` `accounts` key 7 ``); for SQLite's write lock,
        /// `SQLite write lock`.
        name: String,
        /// How long the caller waited.
        waited: Duration,
        /// What was waited for.
        what: LockWait,
    },

    /// A named lock that was held has been lost (its connection died).
    #[error("named lock `{name}` was lost: its connection is gone")]
    LockLost {
        /// The lock's name.
        name: String,
    },

    /// [`Tx::fence`](crate::Tx::fence) found a newer fencing token of the
    /// named lock than the guard's: another holder took the lock after this
    /// one (which lost it, maybe without noticing). Roll the transaction
    /// back: its writes must not land.
    ///
    /// ```
    /// use safesync_core::Error;
    ///
    /// let err = Error::Fenced { name: "nightly-report".into(), token: 7, current: 8 };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "named lock `nightly-report` was taken by a later holder (token 8) after this holder's token 7: its writes are fenced off, roll the transaction back"
    /// );
    /// ```
    #[error(
        "named lock `{name}` was taken by a later holder (token {current}) after this holder's token {token}: its writes are fenced off, roll the transaction back"
    )]
    Fenced {
        /// The lock's name.
        name: String,
        /// The guard's token.
        token: u64,
        /// The newest token of the name in the database.
        current: u64,
    },

    /// A value could not be decoded into the type asked for.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// An error from the database driver (connection, SQL, constraint, type).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The database could not be reached or refused the login.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password replaced by `***`.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// A TLS connection was refused because the server's certificate could
    /// not be verified: signed by a CA that was not given, issued for
    /// another host name, expired. Feature `tls`.
    ///
    /// Give the CA that signed the server's certificate: PostgreSQL
    /// `sslmode=verify-full&sslrootcert=/path/ca.pem`, MySQL/MariaDB
    /// `ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/ca.pem`, Redis
    /// `safesync::queue::client_tls`.
    ///
    /// ```
    /// use safesync_core::Error;
    ///
    /// let err = Error::TlsNotTrusted {
    ///     target: "postgres://app@db.internal/app".into(),
    ///     reason: "it is not signed by a trusted CA (UnknownIssuer)".into(),
    ///     source: "invalid peer certificate: UnknownIssuer".into(),
    /// };
    /// assert!(err.to_string().starts_with(
    ///     "cannot connect to postgres://app@db.internal/app: the server's TLS certificate \
    ///      is not trusted: it is not signed by a trusted CA (UnknownIssuer)"
    /// ));
    /// ```
    #[error(
        "cannot connect to {target}: the server's TLS certificate is not trusted: {reason}; \
         give the CA that signed it (PostgreSQL `sslrootcert=`, MySQL `ssl-ca=`, Redis \
         `safesync::queue::client_tls`)"
    )]
    TlsNotTrusted {
        /// The database URL (password replaced by `***`) or the Redis address.
        target: String,
        /// What was wrong with the certificate, in words.
        reason: String,
        /// The driver's error (a `sqlx::Error` or a `redis::RedisError`).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A Redis command failed, or Redis could not be reached (the queue).
    ///
    /// `source` is the client's own error (a `redis::RedisError` for
    /// safesync's queue): downcast it to ask it more.
    ///
    /// ```
    /// use safesync_core::Error;
    ///
    /// let err = Error::Redis {
    ///     op: "XACK on `orders`".into(),
    ///     source: "connection refused".into(),
    /// };
    /// assert_eq!(err.to_string(), "redis XACK on `orders` failed: connection refused");
    /// ```
    #[error("redis {op} failed: {source}")]
    Redis {
        /// What was being done: the command and the stream, or the
        /// address being connected to. Never contains a password.
        op: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A statement that cannot be run as written: its `?` placeholders do
    /// not match the values bound, or its text is malformed (an
    /// unterminated string, a `$1`-style placeholder). Names the statement.
    ///
    /// ```
    /// use safesync_core::Error;
    ///
    /// let err = Error::Query { sql: "SELECT ?".into(), reason: "it has 1 `?` placeholder(s) but 0 value(s) were bound".into() };
    /// assert_eq!(err.to_string(), "cannot run `SELECT ?`: it has 1 `?` placeholder(s) but 0 value(s) were bound");
    /// ```
    #[error("cannot run `{sql}`: {reason}")]
    Query {
        /// The statement as written.
        sql: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Bad configuration: an unparsable URL, an unknown scheme, a bad option.
    /// Never contains a password.
    #[error("configuration error: {0}")]
    Config(String),

    /// The live table does not match the record's struct
    /// ([`Db::check_table`](crate::Db::check_table)): every mismatch, in
    /// one error.
    ///
    /// ```
    /// use safesync_core::{Error, Mismatch};
    ///
    /// let err = Error::Schema {
    ///     record: "Account",
    ///     table: "accounts".into(),
    ///     mismatches: vec![Mismatch::MissingTable],
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "table `accounts` does not match struct `Account`: the table does not exist"
    /// );
    /// ```
    #[error(
        "table `{table}` does not match struct `{record}`: {}",
        crate::schema::Mismatches(mismatches)
    )]
    Schema {
        /// The struct's name.
        record: &'static str,
        /// The table, as `schema.table` when the record names a schema.
        table: String,
        /// Every difference found.
        mismatches: Vec<crate::schema::Mismatch>,
    },

    /// A queue handler refuses its message for good: the payload decoded
    /// but is not valid for the business (see [`Error::reject`]). The queue
    /// worker moves the entry to the dead letters at once, without retries;
    /// no retry policy retries it.
    #[error("rejected: {0}")]
    Rejected(String),

    /// A retry loop stopped: the last error, and how many attempts ran.
    #[error("gave up after {attempts} attempt(s) in {elapsed:?}: {last}")]
    RetriesExhausted {
        /// Attempts that ran, the failed last one included.
        attempts: u32,
        /// Time spent in all attempts and back-off sleeps.
        elapsed: Duration,
        /// The error of the last attempt.
        #[source]
        last: Box<Error>,
    },
}

/// What an [`Error::LockTimeout`] waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockWait {
    /// A named (advisory) lock.
    Named,
    /// A row lock (`lock`, or a write to a row another transaction holds).
    Row,
    /// SQLite's write lock, held by another transaction of the same `Db`.
    WriteLock,
}

struct LockTimeoutDisplay<'a> {
    name: &'a str,
    waited: Duration,
    what: LockWait,
}

impl fmt::Display for LockTimeoutDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, waited) = (self.name, self.waited);
        match self.what {
            LockWait::Named => write!(
                f,
                "named lock `{name}` is held elsewhere; gave up after {waited:?}"
            ),
            LockWait::Row => write!(
                f,
                "row of {name} is locked by another transaction; gave up after {waited:?}"
            ),
            LockWait::WriteLock => write!(
                f,
                "the {name} is held by another transaction of this `Db`; gave up after {waited:?}"
            ),
        }
    }
}

struct NotFoundDisplay<'a> {
    table: Option<&'static str>,
    key: Option<&'a str>,
}

impl fmt::Display for NotFoundDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.table, self.key) {
            (Some(t), Some(k)) => write!(f, "no row in `{t}` with key {k}"),
            (Some(t), None) => write!(f, "no row in `{t}`"),
            (None, Some(k)) => write!(f, "not found: {k}"),
            (None, None) => f.write_str("not found"),
        }
    }
}

impl Error {
    /// A bare [`Error::NotFound`], for handlers that looked something up and
    /// came back empty.
    ///
    /// ```
    /// # use safesync_core::Error;
    /// let e = Error::not_found();
    /// assert_eq!(e.to_string(), "not found");
    /// ```
    pub fn not_found() -> Self {
        Error::NotFound {
            table: None,
            key: None,
        }
    }

    /// An [`Error::Rejected`]: returned by a queue handler, it sends the
    /// entry to the dead letters at once, with `reason`, without retrying
    /// it or waiting for further deliveries.
    ///
    /// ```
    /// # use safesync_core::Error;
    /// let e = Error::reject("order 7 has no lines");
    /// assert_eq!(e.to_string(), "rejected: order 7 has no lines");
    /// assert!(!e.is_retryable());
    /// ```
    pub fn reject(reason: impl Into<String>) -> Self {
        Error::Rejected(reason.into())
    }

    /// True for errors that a fresh attempt in a new transaction may not hit:
    /// version conflicts, deadlocks and serialisation failures, SQLite busy.
    ///
    /// Lock-wait timeouts are not included; [`Error::is_lock_wait_timeout`]
    /// tells those apart, and a retry policy may opt in to them.
    ///
    /// ```
    /// # use safesync_core::Error;
    /// assert!(!Error::not_found().is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict { .. } => true,
            Error::Database(e) => matches!(
                crate::backend::classify(e),
                Some(crate::backend::DbErrorKind::Deadlock | crate::backend::DbErrorKind::Busy)
            ),
            _ => false,
        }
    }

    /// True when a row lock or SQLite's write lock was waited for in vain:
    /// an [`Error::LockTimeout`] of a row or the write lock, or the
    /// database's own lock-wait error (MySQL 1205, Postgres 55P03). A named
    /// lock's timeout is not one: it is not about the transaction.
    ///
    /// ```
    /// # use safesync_core::{Error, LockWait};
    /// assert!(!Error::not_found().is_lock_wait_timeout());
    /// let row = Error::LockTimeout {
    ///     name: "`t` key 1".into(),
    ///     waited: std::time::Duration::from_secs(1),
    ///     what: LockWait::Row,
    /// };
    /// assert!(row.is_lock_wait_timeout());
    /// ```
    pub fn is_lock_wait_timeout(&self) -> bool {
        match self {
            Error::LockTimeout { what, .. } => *what != LockWait::Named,
            Error::Database(e) => crate::backend::is_lock_wait_timeout(e),
            _ => false,
        }
    }

    /// The innermost error: the last attempt's error for
    /// [`Error::RetriesExhausted`], the error itself otherwise.
    ///
    /// ```
    /// # use safesync_core::Error;
    /// let e = Error::RetriesExhausted {
    ///     attempts: 3,
    ///     elapsed: std::time::Duration::ZERO,
    ///     last: Box::new(Error::not_found()),
    /// };
    /// assert!(matches!(e.root(), Error::NotFound { .. }));
    /// ```
    pub fn root(&self) -> &Error {
        match self {
            Error::RetriesExhausted { last, .. } => last.root(),
            other => other,
        }
    }
}
