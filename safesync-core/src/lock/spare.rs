//! Dedicated named-lock connections kept between locks.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Dedicated lock connections that hold no lock, kept for the next
/// acquisition so that taking a named lock costs one round trip, not a
/// connection (TCP and authentication). Only a connection whose lock was
/// released cleanly (`RELEASE_LOCK` = 1, `pg_advisory_unlock` = true), or
/// whose acquisition timed out, comes back here; one whose guard was dropped,
/// cancelled or lost is closed, so the server frees whatever it held.
///
/// What a kept connection is belongs to its backend: a `Db` has one
/// backend, which puts and takes its own type.
#[derive(Clone)]
pub(crate) struct SpareConns {
    idle: Arc<Mutex<Vec<Box<dyn Any + Send>>>>,
    max: usize,
}

impl std::fmt::Debug for SpareConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpareConns")
            .field("idle", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

impl SpareConns {
    pub(crate) fn new(max: usize) -> SpareConns {
        SpareConns {
            idle: Arc::default(),
            max,
        }
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Box<dyn Any + Send>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Idle connections kept right now.
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }

    /// A kept connection of type `C`, if there is one.
    #[allow(dead_code)] // reason: only server backends keep connections
    pub(crate) fn take<C: Send + 'static>(&self) -> Option<C> {
        let conn = self.slots().pop()?;
        conn.downcast::<C>().ok().map(|c| *c)
    }

    /// Keeps `conn` for reuse, or drops (closes) it when enough are kept.
    #[allow(dead_code)] // reason: only server backends keep connections
    pub(crate) fn put<C: Send + 'static>(&self, conn: C) {
        let mut idle = self.slots();
        if idle.len() < self.max {
            idle.push(Box::new(conn));
        }
    }

    /// Closes every kept connection.
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut *self.slots());
        drop(dropped);
    }
}
