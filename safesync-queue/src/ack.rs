//! Acknowledgements: batched by one task into one `XACK` per handler and
//! round trip, so handlers never wait on Redis after their commit.

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

/// One pipeline of `XACK`s: one per handler, with all of its ids (the
/// answer, how many were still pending, splits them into acknowledged and
/// already acknowledged).
async fn send(shared: &Shared, batch: &[(usize, String)]) {
    let mut by_handler: Vec<(usize, Vec<&str>)> = Vec::new();
    for (handler, id) in batch {
        match by_handler.iter_mut().find(|(h, _)| h == handler) {
            Some((_, ids)) => ids.push(id),
            None => by_handler.push((*handler, vec![id])),
        }
    }
    let mut pipe = redis::pipe();
    for (handler, ids) in &by_handler {
        let h = &shared.handlers[*handler];
        let key = &shared.sources[*handler].key;
        pipe.cmd("XACK").arg(key).arg(h.group()).arg(ids);
    }
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=TRIES {
        match shared.side.pipe::<Vec<u64>>(&pipe, "XACK").await {
            Ok(answers) => {
                for ((handler, ids), n) in by_handler.iter().zip(answers) {
                    let total = ids.len() as u64;
                    count_many(shared, *handler, n.min(total), total - n.min(total));
                }
                return;
            }
            Err(e) if attempt < TRIES => {
                tracing::warn!(error = %e, attempt, "acknowledging failed; trying again");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => {
                // Not an error of the run: the ledger recognises these
                // entries when they come again (a Redis restart loses acks).
                tracing::warn!(
                    error = %e,
                    entries = batch.len(),
                    "acknowledging failed; the entries stay pending (delivered again; a transactional handler's ledger recognises them)"
                );
            }
        }
    }
}

/// Counts `acked` entries acknowledged and `already` that already were.
fn count_many(shared: &Shared, handler: usize, acked: u64, already: u64) {
    let labels = &shared.labels[handler];
    Stats::add(&shared.stats.acked, acked);
    labels.add(Count::Acked, acked);
    Stats::add(&shared.stats.already_acked, already);
    labels.add(Count::AlreadyAcked, already);
}

/// Counts the answer `n` of one single-id `XACK` (1 acknowledged, 0
/// already was).
pub(crate) fn count(shared: &Shared, handler: usize, n: i64) {
    if n > 0 {
        count_many(shared, handler, 1, 0);
    } else {
        count_many(shared, handler, 0, 1);
    }
}
