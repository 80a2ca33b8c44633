//! Acknowledgements: batched into pipelines by one task, so handlers never
//! wait on Redis after their commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Count;
use crate::worker::{Shared, Stats};

/// Most acknowledgements sent in one pipeline.
const MAX_BATCH: usize = 512;
/// Tries of one pipeline before its acks are given up (the entries stay
/// pending; the ledger recognises them when they come again).
const TRIES: u32 = 3;

/// What the acker is asked.
#[derive(Debug)]
pub(crate) enum AckMsg {
    /// `XACK` the entry `id` of handler `handler`'s stream and group.
    Ack { handler: usize, id: String },
    /// Everything sent before is acknowledged: answer and stop.
    Stop(oneshot::Sender<()>),
}

/// The acker task.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut stop = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                AckMsg::Ack { handler, id } => batch.push((handler, id)),
                AckMsg::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            send(&shared, &batch).await;
        }
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
    }
}

/// One pipeline of `XACK`s, one per entry so each answer is known.
async fn send(shared: &Shared, batch: &[(usize, String)]) {
    let mut pipe = redis::pipe();
    for (handler, id) in batch {
        let h = &shared.handlers[*handler];
        pipe.cmd("XACK").arg(h.stream()).arg(h.group()).arg(id);
    }
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=TRIES {
        match shared.side.pipe::<Vec<i64>>(&pipe, "XACK").await {
            Ok(answers) => {
                for ((handler, _), n) in batch.iter().zip(answers) {
                    count(shared, *handler, n);
                }
                return;
            }
            Err(e) if attempt < TRIES => {
                tracing::warn!(error = %e, attempt, "acknowledging failed; trying again");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    entries = batch.len(),
                    "acknowledging failed; the entries stay pending and will be recognised by the ledger"
                );
            }
        }
    }
}

/// Counts the answer `n` of one `XACK` (1 acknowledged, 0 already was).
pub(crate) fn count(shared: &Shared, handler: usize, n: i64) {
    let h = &shared.handlers[handler];
    if n > 0 {
        Stats::add(&shared.stats.acked, 1);
        shared.metrics.add(Count::Acked, h.stream(), h.group(), 1);
    } else {
        Stats::add(&shared.stats.already_acked, 1);
        shared
            .metrics
            .add(Count::AlreadyAcked, h.stream(), h.group(), 1);
    }
}
