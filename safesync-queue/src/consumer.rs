//! The read loop of one handler: its own pending entries after a
//! (re)connect, due claims, then new entries, on a connection of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;
use safesync_core::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::claim::{self, Cursor};
use crate::conn::{self, READ_MARGIN};
use crate::entry::{self, Entry};
use crate::process::{self, Delivery};
use crate::worker::{Shared, Stats, create_group};

/// How long a stopped read may take to return after `CLIENT UNBLOCK`.
const UNBLOCK_GRACE: Duration = Duration::from_secs(1);

/// The connection of the blocking reads, and its id for `CLIENT UNBLOCK`.
struct Reader {
    conn: MultiplexedConnection,
    id: Option<i64>,
}

impl Reader {
    async fn connect(shared: &Shared) -> Result<Reader> {
        let mut conn = conn::connect_named(
            &shared.redis,
            shared.config.block + READ_MARGIN,
            &format!("safesync-reader-{}", shared.config.consumer),
        )
        .await?;
        let id = redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut conn)
            .await
            .ok();
        Ok(Reader { conn, id })
    }
}

/// Exponential back-off with jitter, 100 ms to 5 s.
struct Backoff {
    /// Sleeps since the last success.
    tries: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// From 100 ms doubling to 5 s, each sleep at least half its cap.
    const STEPS: safesync_core::__private::Backoff =
        safesync_core::__private::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    fn new() -> Backoff {
        Backoff {
            tries: 0,
            rng: fastrand::Rng::new(),
        }
    }

    fn reset(&mut self) {
        self.tries = 0;
    }

    /// Sleeps; false when `stop` came first.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        self.tries = self.tries.saturating_add(1);
        let delay = Self::STEPS.equal_jitter(self.tries, &mut self.rng);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = stop.cancelled() => false,
        }
    }
}

/// Where a loop is.
struct State {
    /// Reading own pending entries again from after this id (after a
    /// (re)connect); `None` when done.
    pending_from: Option<String>,
    cursor: Cursor,
    next_claim: Instant,
    /// The newest id this loop saw delivered to the group: where a group
    /// found deleted is created again from.
    last_delivered: Option<String>,
}

impl State {
    /// Notes entries delivered to the group.
    fn delivered(&mut self, entries: &[Entry]) {
        for e in entries {
            self.last_delivered = entry::later_id(self.last_delivered.take(), &e.id);
        }
    }
}

/// Where a group found deleted is created again from: after the last entry
/// known delivered to it, or the start of the stream when none is known.
fn recreate_from(last_delivered: Option<&str>) -> &str {
    last_delivered.unwrap_or("0")
}

/// Runs the loop of handler `index` until `stop`.
pub(crate) async fn consume(shared: Arc<Shared>, index: usize, stop: CancellationToken) {
    let h = Arc::clone(&shared.handlers[index]);
    let (stream, group) = (shared.sources[index].key.as_str(), h.group());
    let mut reader: Option<Reader> = None;
    let mut state = State {
        pending_from: Some("0".to_owned()),
        cursor: Cursor::default(),
        next_claim: Instant::now(),
        last_delivered: None,
    };
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        let Some(slots) = free_slots(
            &shared.limit,
            shared.config.read_ahead,
            shared.config.batch,
            &stop,
        )
        .await
        else {
            break;
        };
        let r = match reader.as_mut() {
            Some(r) => r,
            None => match Reader::connect(&shared).await {
                Ok(r) => {
                    // The server may have handed us entries we never saw.
                    state.pending_from = Some("0".to_owned());
                    reader.insert(r)
                }
                Err(e) => {
                    tracing::warn!(error = %e, stream, "cannot connect the reader; retrying");
                    if !backoff.wait(&stop).await {
                        break;
                    }
                    continue;
                }
            },
        };
        match step(&shared, index, r, slots, &mut state, &stop).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                let redis_error = conn::as_redis_error(&e);
                if redis_error.and_then(conn::code) == Some("NOGROUP") {
                    let from = recreate_from(state.last_delivered.as_deref()).to_owned();
                    if from == "0" {
                        tracing::warn!(
                            stream,
                            group,
                            "the consumer group is gone and no delivered entry is known: \
                             creating it again from the start of the stream (entries are delivered again)"
                        );
                    } else {
                        tracing::warn!(
                            stream,
                            group,
                            after = %from,
                            "the consumer group is gone: creating it again after the last entry delivered \
                             to it (entries pending in it then are not delivered again)"
                        );
                    }
                    if !backoff.wait(&stop).await {
                        break;
                    }
                    if let Err(e) = create_group(&shared.side, stream, group, &from).await {
                        tracing::warn!(error = %e, stream, group, "cannot create the consumer group");
                    }
                    state.cursor = Cursor::default();
                } else {
                    if redis_error.is_some_and(conn::is_connection_error) {
                        reader = None;
                    }
                    tracing::warn!(error = %e, stream, group, "read failed; retrying");
                    if !backoff.wait(&stop).await {
                        break;
                    }
                }
            }
        }
    }
}

/// Waits until a handler slot is free; how many are, plus `read_ahead`
/// (at most `batch`). `None` on stop.
async fn free_slots(
    limit: &Semaphore,
    read_ahead: usize,
    batch: usize,
    stop: &CancellationToken,
) -> Option<usize> {
    let permit = tokio::select! {
        biased;
        p = limit.acquire() => p.ok()?,
        () = stop.cancelled() => return None,
    };
    let n = 1 + limit.available_permits();
    drop(permit);
    Some(n.saturating_add(read_ahead).min(batch))
}

/// A handler slot for an entry already read; `None` on stop (the entry
/// stays pending).
async fn slot(limit: &Arc<Semaphore>, stop: &CancellationToken) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        p = Arc::clone(limit).acquire_owned() => p.ok(),
        () = stop.cancelled() => None,
    }
}

/// One turn: pending entries (after a reconnect), due claims, new entries.
async fn step(
    shared: &Arc<Shared>,
    index: usize,
    r: &mut Reader,
    slots: usize,
    state: &mut State,
    stop: &CancellationToken,
) -> Result<()> {
    let h = &shared.handlers[index];
    let (stream, group) = (shared.sources[index].key.as_str(), h.group());

    if let Some(from) = state.pending_from.clone() {
        let entries = read(shared, r, stream, group, slots, None, &from, stop).await?;
        state.delivered(&entries);
        match entries.last() {
            None => state.pending_from = None,
            Some(last) => {
                state.pending_from = Some(last.id.clone());
                redeliver(shared, index, entries, stop).await?;
            }
        }
        return Ok(());
    }

    let now = Instant::now();
    if now >= state.next_claim {
        let claim = claim::autoclaim(shared, stream, group, &mut state.cursor, slots).await?;
        state.next_claim = if state.cursor.wrapped() {
            now + claim::claim_interval(shared.config.claim_idle)
        } else {
            now
        };
        for id in claim.deleted {
            process::trimmed(shared, index, id);
        }
        state.delivered(&claim.claimed);
        let n = claim.claimed.len() as u64;
        if n > 0 {
            Stats::add(&shared.stats.claimed, n);
            shared.labels[index].add(crate::metrics::Count::Claimed, n);
            tracing::info!(stream, group, claimed = n, "claimed idle entries");
            redeliver(shared, index, claim.claimed, stop).await?;
            return Ok(());
        }
    }

    let until_claim = state.next_claim.saturating_duration_since(Instant::now());
    let block = shared
        .config
        .block
        .min(until_claim)
        .max(Duration::from_millis(1));
    // A transactional handler's entries share transactions, a group per
    // free slot; a plain handler's entries read ahead of the free slots
    // are shared out among them, each slot's task handling its share in
    // turn, as the slot would anyway, without a task per entry.
    let plain = matches!(h.body(), crate::handler::Body::Plain(_));
    let per_tx = if plain {
        1
    } else {
        shared.config.per_transaction
    };
    let entries = read(
        shared,
        r,
        stream,
        group,
        slots * per_tx,
        Some(block),
        ">",
        stop,
    )
    .await?;
    state.delivered(&entries);
    let per_task = if plain {
        entries
            .len()
            .div_ceil(shared.limit.available_permits().max(1))
    } else {
        per_tx
    };
    let mut entries = entries.into_iter().map(|entry| Delivery {
        handler: index,
        entry,
        deliveries: 1,
    });
    loop {
        let group: Vec<Delivery> = entries.by_ref().take(per_task).collect();
        if group.is_empty() {
            break;
        }
        let Some(permit) = slot(&shared.limit, stop).await else {
            break;
        };
        process::dispatch(shared, group, permit);
    }
    Ok(())
}

/// Hands on entries delivered again (own pending ones, or claimed):
/// deleted ones are acknowledged, ones running here left alone, ones past
/// the delivery limit moved to the dead letters, the rest dispatched.
async fn redeliver(
    shared: &Arc<Shared>,
    index: usize,
    entries: Vec<Entry>,
    stop: &CancellationToken,
) -> Result<()> {
    let h = &shared.handlers[index];
    let (stream, group) = (shared.sources[index].key.as_str(), h.group());
    let mut live = Vec::with_capacity(entries.len());
    for e in entries {
        if e.fields.is_none() {
            process::trimmed(shared, index, e.id);
        } else if !process::is_in_flight(shared, index, &e.id) {
            live.push(e);
        }
    }
    let counts = claim::delivery_counts(shared, stream, group, &live).await?;
    let max = shared.config.max_deliveries;
    for entry in live {
        // Not pending any more: acknowledged by someone in between.
        let Some(&deliveries) = counts.get(&entry.id) else {
            continue;
        };
        let d = Delivery {
            handler: index,
            entry,
            deliveries,
        };
        if deliveries > max {
            let last = shared
                .last_errors
                .lock()
                .ok()
                .and_then(|e| e.get(&(index, d.entry.id.clone())).cloned())
                .unwrap_or_else(|| "not seen by this worker".to_owned());
            let reason = format!(
                "delivered {deliveries} times, more than max_deliveries {max}; last error: {last}"
            );
            let reason = crate::dead_letter::cap_reason(&reason);
            tracing::warn!(id = %d.entry.id, %reason, "giving up: moving the entry to the dead letters");
            process::dead_letter(shared, &d, &reason).await;
            continue;
        }
        let Some(permit) = slot(&shared.limit, stop).await else {
            break;
        };
        process::dispatch(shared, vec![d], permit);
    }
    Ok(())
}

/// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS s from`. A blocking
/// read ends at once on `stop`: `CLIENT UNBLOCK` from the side
/// connection makes it return empty.
#[allow(clippy::too_many_arguments)] // reason: one call site; a struct would only rename them
async fn read(
    shared: &Shared,
    r: &mut Reader,
    stream: &str,
    group: &str,
    count: usize,
    block: Option<Duration>,
    from: &str,
    stop: &CancellationToken,
) -> Result<Vec<Entry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(&shared.config.consumer)
        .arg("COUNT")
        .arg(count.max(1));
    if let Some(b) = block {
        cmd.arg("BLOCK")
            .arg(u64::try_from(b.as_millis()).unwrap_or(u64::MAX).max(1));
    }
    cmd.arg("STREAMS").arg(stream).arg(from);
    let mut conn = r.conn.clone();
    let query = async move { cmd.query_async::<Value>(&mut conn).await };
    tokio::pin!(query);
    let reply = tokio::select! {
        biased;
        reply = &mut query => reply,
        () = stop.cancelled(), if block.is_some() => {
            let Some(id) = r.id else {
                // No id to unblock: drop the read; what it may have been
                // handed stays pending for the next run or a claim.
                return Ok(Vec::new());
            };
            let mut unblock = redis::cmd("CLIENT");
            unblock.arg("UNBLOCK").arg(id);
            if let Err(e) = shared.side.query::<i64>(&unblock, "CLIENT UNBLOCK").await {
                tracing::warn!(error = %e, "cannot unblock the read; dropping it");
                return Ok(Vec::new());
            }
            match tokio::time::timeout(UNBLOCK_GRACE, &mut query).await {
                Ok(reply) => reply,
                Err(_) => return Ok(Vec::new()),
            }
        }
    };
    let op = format!("XREADGROUP on `{stream}`");
    let reply = reply.map_err(|e| conn::redis_err(&op, e))?;
    entry::read_reply(reply).map_err(|reason| Error::Decode {
        what: format!("the reply to {op}"),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::recreate_from;

    #[test]
    fn a_deleted_group_is_recreated_after_the_last_delivered_entry() {
        assert_eq!(recreate_from(Some("1700000000000-3")), "1700000000000-3");
        assert_eq!(recreate_from(None), "0", "nothing known: from the start");
    }
}
