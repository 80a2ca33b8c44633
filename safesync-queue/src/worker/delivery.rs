//! What passes between the stages: a [`Delivery`] from read to run, and
//! its [`Outcome`] from run to settle.

use std::sync::Arc;

use super::route::Route;
use crate::entry::Entry;
use crate::metrics::Outcome as Timed;

/// An entry handed to this worker, with Redis's delivery count.
pub(crate) struct Delivery {
    pub(crate) route: Arc<Route>,
    pub(crate) entry: Entry,
    pub(crate) deliveries: u64,
}

impl Delivery {
    /// The id the ledger records for it: the entry's, or for an entry
    /// replayed from the dead letters, the id it had in the stream (so
    /// that the replay of an entry whose effect committed is recognised).
    pub(crate) fn ledger_id(&self) -> &str {
        let original = self
            .route
            .replayed
            .then(|| self.entry.field(crate::dead_letter::REPLAY_OF))
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|id| crate::entry::is_entry_id(id));
        original.unwrap_or(&self.entry.id)
    }
}

/// How running a delivery ended: what the run stage found, for the settle
/// stage to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The transaction committed, or a plain handler returned `Ok`.
    Committed,
    /// The ledger had the entry: nothing ran.
    Duplicate,
    /// The delivery failed.
    Failed(Failure),
    /// The handler rejected the payload for good
    /// ([`Error::reject`](safesync_core::Error::reject)): the reason. No
    /// retry or later delivery would help.
    Rejected(String),
    /// The payload cannot be decoded: the reason.
    Undecodable(String),
    /// The entry was deleted or trimmed away while pending.
    Trimmed,
    /// Delivered more often than allowed: not run.
    OverLimit,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) reason: String,
    /// True when the handler itself failed (an error, a panic, a timeout)
    /// rather than the database around it.
    pub(crate) handler: bool,
    /// Its label in the handler histogram.
    pub(crate) timed: Timed,
}
