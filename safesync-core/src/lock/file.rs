//! SQLite's named locks: an OS file lock (`flock`) on a sidecar file next
//! to a database file, or an in-process lock for an in-memory database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{LockSession, Session, SpareConns, advisory_key};
use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// Pauses between tries of a file lock another process holds.
const POLL: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));

/// Lock files kept open per process, beyond those in use.
const KEPT_LOCK_FILES: usize = 64;

/// Takes `name` for the database file `path` (`None`: in memory), waiting
/// at most `timeout`; `Ok(None)` when it stayed busy.
pub(crate) async fn lock(
    path: Option<PathBuf>,
    name: &str,
    timeout: Duration,
) -> Result<Option<Session>> {
    let Some(db_path) = path else {
        let m = memory_lock(name);
        let guard = if timeout.is_zero() {
            m.try_lock_owned().ok()
        } else {
            tokio::time::timeout(timeout, m.lock_owned()).await.ok()
        };
        return Ok(guard.map(|g| Box::new(MemoryLock(g)) as Session));
    };
    let lock_path = {
        let mut p = db_path.into_os_string();
        p.push(format!(".lock-{:016x}", advisory_key(name)));
        PathBuf::from(p)
    };
    let deadline = Instant::now().checked_add(timeout);
    // This process's holders of the same file queue here; other
    // processes (and other open files) are kept out by the file lock.
    let slot = lock_file_slot(&lock_path);
    let guard = if timeout.is_zero() {
        slot.try_lock_owned().ok()
    } else {
        tokio::time::timeout(timeout, slot.lock_owned()).await.ok()
    };
    let Some(mut guard) = guard else {
        return Ok(None);
    };
    if guard.is_none() {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::Config(format!(
                    "cannot open lock file {}: {e}",
                    lock_path.display()
                ))
            })?;
        *guard = Some(file);
    }
    let lock = FileLock { slot: guard };
    let mut tries = 0;
    loop {
        match lock.try_lock() {
            Ok(true) => return Ok(Some(Box::new(lock))),
            Ok(false) => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let now = Instant::now();
        let left = match deadline {
            Some(d) if now >= d => return Ok(None),
            Some(d) => d - now,
            None => Duration::MAX,
        };
        tries += 1;
        tokio::time::sleep(POLL.cap(tries).min(left)).await;
    }
}

fn memory_lock(name: &str) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<StdMutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let map = LOCKS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(name.to_owned()).or_default())
}

/// This process's open lock file of `path` (opened on first use), behind
/// an async mutex. Lock files stay open between locks, so a lock costs a
/// `flock`, not an `open` and a `close`; idle ones beyond
/// [`KEPT_LOCK_FILES`] are closed.
fn lock_file_slot(path: &Path) -> Arc<Mutex<Option<std::fs::File>>> {
    type Slots = HashMap<PathBuf, Arc<Mutex<Option<std::fs::File>>>>;
    static SLOTS: OnceLock<StdMutex<Slots>> = OnceLock::new();
    let mut slots = SLOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = slots.get(path) {
        return Arc::clone(slot);
    }
    if slots.len() >= KEPT_LOCK_FILES {
        // Only the map holds an idle slot: dropping it closes the file.
        slots.retain(|_, slot| Arc::strong_count(slot) > 1);
    }
    Arc::clone(slots.entry(path.to_path_buf()).or_default())
}

/// A held in-process lock (in-memory SQLite).
struct MemoryLock(#[allow(dead_code)] OwnedMutexGuard<()>);

impl LockSession for MemoryLock {
    fn check(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn release(self: Box<Self>, _spare: &SpareConns) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async { Ok(true) })
    }

    fn can_be_lost(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// A held file lock: this process's open lock file, locked with `flock`.
/// Dropping it unlocks the file, which stays open for the next lock.
struct FileLock {
    slot: OwnedMutexGuard<Option<std::fs::File>>,
}

impl FileLock {
    /// `Ok(false)` when another open file (another process) holds it.
    fn try_lock(&self) -> std::io::Result<bool> {
        let Some(file) = self.slot.as_ref() else {
            return Ok(false);
        };
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Unlocks; false when that failed.
    fn unlock(&self) -> bool {
        self.slot.as_ref().is_some_and(|f| f.unlock().is_ok())
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Unlocking a file that is not locked does nothing.
        let _ = self.unlock();
    }
}

impl LockSession for FileLock {
    fn check(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn release(self: Box<Self>, _spare: &SpareConns) -> BoxFuture<'_, Result<bool>> {
        let unlocked = self.unlock();
        Box::pin(async move { Ok(unlocked) })
    }

    fn can_be_lost(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}
