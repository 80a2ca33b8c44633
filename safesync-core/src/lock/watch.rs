//! The watcher of a held named lock: pings its connection and reports the
//! loss.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::Session;
use crate::metrics::Metrics;

/// What the watcher reports into.
pub(super) struct Report {
    pub(super) lock_name: String,
    pub(super) metrics: Metrics,
    pub(super) metric_kind: &'static str,
}

/// Checks the session every `ping`; on a failed check drops it (closing
/// the connection, so the server frees the lock for good) and sends
/// `false` on `held`.
pub(super) fn spawn(
    session: Arc<Mutex<Option<Session>>>,
    held: watch::Sender<bool>,
    ping: Duration,
    report: Report,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ping);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let mut guard = session.lock().await;
            let Some(s) = guard.as_mut() else { return };
            if !s.check().await {
                guard.take();
                tracing::warn!(lock = %report.lock_name, "named lock lost: its connection is gone");
                report.metrics.lock_lost(report.metric_kind);
                let _ = held.send(false);
                return;
            }
        }
    })
}
