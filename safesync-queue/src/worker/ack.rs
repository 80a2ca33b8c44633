//! The ack stage: acknowledgements batched by one task into one `XACK`
//! per route and round trip, so that no handler waits on Redis after its
//! commit. The settle stage holds an [`Acks`] handle; the task owns the
//! receiving end and the side connection it sends on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::report::Event;
use super::route::Route;
use crate::conn::SideConn;

/// Most acknowledgements sent in one pipeline.
const MAX_BATCH: usize = 512;
/// Tries of one pipeline before its acks are given up (the entries stay
/// pending; the ledger recognises them when they come again).
const TRIES: u32 = 3;

/// What the ack task is asked.
enum AckMsg {
    /// `XACK` the entry `id` of `route`'s key and group.
    Ack { route: Arc<Route>, id: String },
    /// Everything sent before is acknowledged: answer and stop.
    Stop(oneshot::Sender<()>),
}

/// The narrow handle to the ack task: queue an acknowledgement, or flush
/// and stop.
#[derive(Clone)]
pub(crate) struct Acks {
    tx: mpsc::UnboundedSender<AckMsg>,
    /// Test hook: commits whose acknowledgement is skipped.
    skip: Arc<AtomicU64>,
}

impl Acks {
    /// The handle and the ack task to spawn; `skip_committed` is the test
    /// hook of `Worker::fail_before_ack_for_tests`.
    pub(crate) fn start(
        side: Arc<SideConn>,
        skip_committed: u64,
    ) -> (Acks, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let acks = Acks {
            tx,
            skip: Arc::new(AtomicU64::new(skip_committed)),
        };
        (acks, run(side, rx))
    }

    /// Queues the acknowledgement of entry `id` of `route`.
    pub(crate) fn ack(&self, route: &Arc<Route>, id: String) {
        let _ = self.tx.send(AckMsg::Ack {
            route: Arc::clone(route),
            id,
        });
    }

    /// Queues the acknowledgement of an entry whose handler committed,
    /// unless the test hook skips it.
    pub(crate) fn ack_committed(&self, route: &Arc<Route>, id: String) {
        let skip = self.skip.load(Ordering::Relaxed) > 0
            && self
                .skip
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
        if skip {
            tracing::warn!("test hook: not acknowledging a committed entry");
        } else {
            self.ack(route, id);
        }
    }

    /// Sends what was queued, then stops the task; waits at most `limit`.
    pub(crate) async fn flush(&self, limit: Duration) {
        let (flushed, wait) = oneshot::channel();
        if self.tx.send(AckMsg::Stop(flushed)).is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

/// The ack task: takes what is queued, up to [`MAX_BATCH`], and sends it in
/// one pipeline.
async fn run(side: Arc<SideConn>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut stop = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                AckMsg::Ack { route, id } => batch.push((route, id)),
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
            send(&side, batch).await;
        }
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
    }
}

/// A route and the ids to acknowledge on it.
type RouteIds = (Arc<Route>, Vec<String>);

/// One pipeline of `XACK`s per hash slot (on a single node, one in all):
/// one `XACK` per route, with all of its ids (the answer, how many were
/// still pending, splits them into acknowledged and already acknowledged).
async fn send(side: &SideConn, batch: Vec<(Arc<Route>, String)>) {
    let mut by_route: Vec<RouteIds> = Vec::new();
    for (route, id) in batch {
        match by_route.iter_mut().find(|(r, _)| r.index == route.index) {
            Some((_, ids)) => ids.push(id),
            None => by_route.push((route, vec![id])),
        }
    }
    if !side.is_cluster() {
        return send_pipeline(side, by_route).await;
    }
    // A cluster pipeline must keep to one slot: a stream and its replay
    // stream share one, other streams do not.
    let mut by_slot: Vec<(u16, Vec<RouteIds>)> = Vec::new();
    for (route, ids) in by_route {
        let slot = crate::keys::slot(&route.key);
        match by_slot.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, routes)) => routes.push((route, ids)),
            None => by_slot.push((slot, vec![(route, ids)])),
        }
    }
    for (_, routes) in by_slot {
        send_pipeline(side, routes).await;
    }
}

/// One pipeline of `XACK`s, tried [`TRIES`] times.
async fn send_pipeline(side: &SideConn, by_route: Vec<RouteIds>) {
    let total: usize = by_route.iter().map(|(_, ids)| ids.len()).sum();
    let mut pipe = redis::pipe();
    for (route, ids) in &by_route {
        pipe.cmd("XACK").arg(&route.key).arg(route.group()).arg(ids);
    }
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=TRIES {
        match side.pipe::<Vec<u64>>(&pipe, "XACK").await {
            Ok(answers) => {
                for ((route, ids), n) in by_route.iter().zip(answers) {
                    let sent = ids.len() as u64;
                    route.report.add(Event::Acked, n.min(sent));
                    route.report.add(Event::AlreadyAcked, sent - n.min(sent));
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
                    entries = total,
                    "acknowledging failed; the entries stay pending (delivered again; a transactional handler's ledger recognises them)"
                );
            }
        }
    }
}
