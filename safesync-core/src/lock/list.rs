//! Which named locks are held right now, and by whom: what each backend
//! can tell an operator.
//!
//! | backend | source | names |
//! |---|---|---|
//! | PostgreSQL | `pg_locks` (advisory, granted, this database) joined with `pg_stat_activity` | only the 64-bit key: a name is shown when it is among the names asked about ([`advisory_key`]) |
//! | MySQL / MariaDB | `information_schema.METADATA_LOCK_INFO` (MariaDB's `metadata_lock_info` plugin) when installed; else `IS_USED_LOCK` for the names asked about | the name as `GET_LOCK` took it (names over 64 bytes hashed) |
//! | SQLite (file) | the lock files `<db>.lock-<key>` beside the database, and the kernel's `/proc/locks` (Linux) for the process holding each | only the key, as on PostgreSQL |
//!
//! Where the backend cannot tell, [`Db::held_locks`] says so in an
//! [`Error::Config`](crate::Error::Config) rather than returning an empty list.

use std::time::Duration;

use futures_core::future::BoxFuture;

use crate::backend::{Backend, on_pool};
use crate::db::Db;
#[cfg(any(feature = "sqlite", feature = "mysql"))]
use crate::error::Error;
use crate::error::Result;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::advisory_key;

/// A named lock that some session holds, from [`Db::held_locks`].
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("held-locks-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let db = safesync_core::Db::connect(&format!("sqlite:{}", dir.join("app.db").display())).await?;
/// let guard = db.advisory_lock("nightly-report", std::time::Duration::from_secs(1)).await?;
/// # #[cfg(target_os = "linux")] {
/// let held = db.held_locks(&["nightly-report"]).await?;
/// // SQLite: the holder is the process holding the lock file, this one.
/// assert_eq!(held[0].name.as_deref(), Some("nightly-report"));
/// assert_eq!(held[0].holder, Some(i64::from(std::process::id())));
/// # }
/// guard.release().await?;
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldNamedLock {
    /// The lock's name, when the backend keeps it (MySQL/MariaDB) or it
    /// is one of the names asked about whose key matches.
    pub name: Option<String>,
    /// The 64-bit key the name hashes to ([`advisory_key`](crate::advisory_key)),
    /// on PostgreSQL and SQLite; `None` on MySQL/MariaDB, which lock by name.
    pub key: Option<i64>,
    /// The holder's server session: PostgreSQL's backend pid, MySQL's
    /// connection id (what [`AdvisoryLock::session_id`](crate::AdvisoryLock::session_id)
    /// reports); on SQLite, the id of the OS process holding the lock file.
    pub holder: Option<i64>,
    /// What else the backend tells of the holder: user, client address
    /// and application name on PostgreSQL, user and host on MariaDB, the
    /// lock file's path on SQLite.
    pub detail: String,
    /// How long the holder's session has been in its current state
    /// (PostgreSQL only: idle time of a session that holds a lock and does
    /// nothing else).
    pub state_for: Option<Duration>,
}

/// One backend's way to list the named locks held right now.
pub(crate) trait ListLocks: Backend {
    /// The locks held on `pool`'s database; `names` are matched against
    /// keys, or asked about one by one where nothing can be listed.
    fn held_locks<'a>(
        pool: &'a sqlx::Pool<Self>,
        names: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<HeldNamedLock>>>;
}

impl Db {
    /// The named locks held right now on this database, by any process,
    /// as far as the backend can tell (see the table in the module docs).
    ///
    /// `names` are lock names to recognise: PostgreSQL and SQLite keep only
    /// a 64-bit hash of a name, so a held lock shows its name only when it
    /// is listed here. On MariaDB without the `metadata_lock_info` plugin,
    /// nothing can be listed, and only the `names` are checked
    /// (`IS_USED_LOCK`); with no names that is
    /// [`Error::Config`](crate::Error::Config) saying so. An in-memory
    /// SQLite database's locks live in the process that holds them:
    /// [`Error::Config`](crate::Error::Config) too.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// let db = safesync_core::Db::connect("postgres://postgres@127.0.0.1/test").await?;
    /// for lock in db.held_locks(&["nightly-report"]).await? {
    ///     println!("{:?} (key {:?}) held by {:?}: {}", lock.name, lock.key, lock.holder, lock.detail);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn held_locks(&self, names: &[&str]) -> Result<Vec<HeldNamedLock>> {
        on_pool!(self.pool(), |p, DB| {
            <DB as ListLocks>::held_locks(&p.pool, names).await
        })
    }
}

/// The name among `names` whose key is `key`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn name_of(key: i64, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| advisory_key(n) == key)
        .map(|n| (*n).to_owned())
}

#[cfg(feature = "postgres")]
impl ListLocks for sqlx::Postgres {
    fn held_locks<'a>(
        pool: &'a sqlx::PgPool,
        names: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<HeldNamedLock>>> {
        // `pg_advisory_lock(bigint)` is `classid` (high half), `objid` (low
        // half), `objsubid = 1`.
        const SQL: &str = "SELECT l.classid::bigint, l.objid::bigint, l.pid::bigint, \
             coalesce(a.usename::text, ''), coalesce(host(a.client_addr), 'local'), \
             coalesce(a.application_name, ''), \
             extract(epoch FROM now() - a.state_change)::float8 \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY l.pid, l.classid, l.objid";
        Box::pin(async move {
            type Row = (i64, i64, i64, String, String, String, Option<f64>);
            let rows: Vec<Row> = sqlx::query_as(SQL).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(hi, lo, pid, user, addr, app, state_for)| {
                    let key = pg_key(hi, lo);
                    HeldNamedLock {
                        name: name_of(key, names),
                        key: Some(key),
                        holder: Some(pid),
                        detail: if app.is_empty() {
                            format!("{user}@{addr}")
                        } else {
                            format!("{user}@{addr} ({app})")
                        },
                        state_for: state_for
                            .filter(|s| s.is_finite() && *s >= 0.0)
                            .map(Duration::from_secs_f64),
                    }
                })
                .collect())
        })
    }
}

/// The 64-bit advisory key from `pg_locks`' two 32-bit halves.
#[cfg(feature = "postgres")]
fn pg_key(classid: i64, objid: i64) -> i64 {
    #[allow(clippy::cast_sign_loss)] // reason: each half is an unsigned 32-bit oid
    let bits = ((classid as u64 & 0xffff_ffff) << 32) | (objid as u64 & 0xffff_ffff);
    i64::from_ne_bytes(bits.to_ne_bytes())
}

#[cfg(feature = "mysql")]
impl ListLocks for sqlx::MySql {
    fn held_locks<'a>(
        pool: &'a sqlx::MySqlPool,
        names: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<HeldNamedLock>>> {
        const PLUGIN: &str = "SELECT COUNT(*) FROM information_schema.PLUGINS \
             WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'";
        // The plugin shows a user lock with its name in TABLE_SCHEMA.
        const LIST: &str = "SELECT CAST(m.TABLE_SCHEMA AS CHAR), CAST(m.THREAD_ID AS SIGNED), \
             CAST(coalesce(concat(p.USER, '@', p.HOST), '') AS CHAR) \
             FROM information_schema.METADATA_LOCK_INFO m \
             LEFT JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID \
             WHERE m.LOCK_TYPE = 'User lock' ORDER BY m.THREAD_ID, m.TABLE_SCHEMA";
        const ONE: &str = "SELECT CAST(IS_USED_LOCK(?) AS SIGNED)";
        Box::pin(async move {
            let plugin: i64 = sqlx::query_scalar(PLUGIN).fetch_one(pool).await?;
            if plugin > 0 {
                let rows: Vec<(String, i64, String)> = sqlx::query_as(LIST).fetch_all(pool).await?;
                return Ok(rows
                    .into_iter()
                    .map(|(name, id, detail)| HeldNamedLock {
                        name: Some(name),
                        key: None,
                        holder: Some(id),
                        detail,
                        state_for: None,
                    })
                    .collect());
            }
            if names.is_empty() {
                return Err(Error::Config(MYSQL_CANNOT_LIST.to_owned()));
            }
            let mut held = Vec::new();
            for name in names {
                let lock_name = crate::backend::mysql::lock_name(name);
                let id: Option<i64> = sqlx::query_scalar(ONE)
                    .bind(lock_name.as_str())
                    .fetch_one(pool)
                    .await?;
                if let Some(id) = id {
                    held.push(HeldNamedLock {
                        name: Some(lock_name),
                        key: None,
                        holder: Some(id),
                        detail: String::new(),
                        state_for: None,
                    });
                }
            }
            Ok(held)
        })
    }
}

/// Why MySQL/MariaDB without the plugin cannot list named locks.
#[cfg(feature = "mysql")]
pub(crate) const MYSQL_CANNOT_LIST: &str = "MySQL/MariaDB cannot list the named locks held: \
     `IS_USED_LOCK(name)` only answers for a name you give, and the \
     `metadata_lock_info` plugin that lists them (information_schema.METADATA_LOCK_INFO) \
     is not installed on this server (an administrator can add it with \
     `INSTALL SONAME 'metadata_lock_info'`); name the locks to check instead";

#[cfg(feature = "sqlite")]
impl ListLocks for sqlx::Sqlite {
    fn held_locks<'a>(
        pool: &'a sqlx::SqlitePool,
        names: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<HeldNamedLock>>> {
        let path = pool.connect_options().get_filename().to_path_buf();
        Box::pin(async move {
            let text = path.as_os_str().to_string_lossy();
            if text.contains("memory") || text.is_empty() {
                return Err(Error::Config(
                    "the named locks of an in-memory SQLite database live inside the \
                     process that holds them: no other process can list them"
                        .to_owned(),
                ));
            }
            sqlite_file_locks(&path, names)
        })
    }
}

/// The held lock files of the SQLite database at `db`: every
/// `<db>.lock-<key>` file that `/proc/locks` shows locked.
#[cfg(feature = "sqlite")]
fn sqlite_file_locks(db: &std::path::Path, names: &[&str]) -> Result<Vec<HeldNamedLock>> {
    let io = |what: &str, e: std::io::Error| Error::Config(format!("cannot read {what}: {e}"));
    let kernel = std::fs::read_to_string("/proc/locks").map_err(|e| {
        Error::Config(format!(
            "cannot tell which SQLite named locks are held: they are `flock`s on the files \
             `{}.lock-<key>`, and only Linux's /proc/locks says which are locked ({e})",
            db.display()
        ))
    })?;
    let dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let prefix = format!(
        "{}.lock-",
        db.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    );
    let mut held = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| io(&dir.display().to_string(), e))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let Ok(bits) = u64::from_str_radix(hex, 16) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let Some(pid) = flock_holder(&kernel, inode(&meta)) else {
            continue;
        };
        let key = i64::from_ne_bytes(bits.to_ne_bytes());
        held.push(HeldNamedLock {
            name: name_of(key, names),
            key: Some(key),
            holder: Some(pid),
            detail: entry.path().display().to_string(),
            state_for: None,
        });
    }
    held.sort_by_key(|l| (l.holder, l.key));
    Ok(held)
}

#[cfg(all(feature = "sqlite", unix))]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(all(feature = "sqlite", not(unix)))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// The process holding a `flock` on the file with inode `inode`, from the
/// text of `/proc/locks`: lines like
/// `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF` (a waiter's line
/// has `->` after the number and is skipped).
#[cfg(feature = "sqlite")]
fn flock_holder(proc_locks: &str, inode: u64) -> Option<i64> {
    proc_locks.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let _number = words.next()?;
        let kind = words.next()?;
        if kind != "FLOCK" {
            return None;
        }
        let _advisory = words.next()?;
        let _mode = words.next()?;
        let pid: i64 = words.next()?.parse().ok()?;
        let file_inode: u64 = words.next()?.rsplit(':').next()?.parse().ok()?;
        (file_inode == inode).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "sqlite")]
    #[test]
    fn proc_locks_lines_give_the_holder_of_an_inode() {
        let text = "1: POSIX  ADVISORY  WRITE 10 fd:01:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 5151 fd:01:1234567 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 99 00:2a:77 0 EOF\n";
        assert_eq!(super::flock_holder(text, 1_234_567), Some(4242));
        assert_eq!(
            super::flock_holder(text, 77),
            Some(99),
            "POSIX locks are not ours"
        );
        assert_eq!(super::flock_holder(text, 5), None);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn pg_lock_halves_make_the_advisory_key() {
        for key in [
            0_i64,
            1,
            -1,
            i64::MIN,
            i64::MAX,
            crate::advisory_key("user:42"),
        ] {
            let bits = u64::from_ne_bytes(key.to_ne_bytes());
            let (hi, lo) = (
                i64::try_from(bits >> 32).unwrap(),
                i64::try_from(bits & 0xffff_ffff).unwrap(),
            );
            assert_eq!(super::pg_key(hi, lo), key);
        }
    }
}
