//! The relay: forwards the outbox's committed rows to Redis.
//!
//! # The protocol, per stream and batch
//!
//! 1. Begin a transaction and claim the stream's oldest rows (up to the
//!    batch size), in id order: `FOR UPDATE SKIP LOCKED` on MySQL/MariaDB
//!    and PostgreSQL; on SQLite the transaction's write lock (`BEGIN
//!    IMMEDIATE`) makes relays take turns.
//! 2. Keep only the claimed rows that no row the relay did not claim
//!    precedes: a plain read lists the stream's visible ids up to the last
//!    claimed one, and the batch is cut at the first difference. A row
//!    locked by another relay (which then holds the older rows) or
//!    committed after the claim is never overtaken, so two relays never
//!    reorder a stream: one of them stops, the other goes on.
//! 3. For each row, in id order, run one Lua script: if the row's dedup
//!    key (`{stream}:outbox:<id>.<nonce>`, in the stream's hash slot)
//!    exists, it returns the entry id it holds and adds nothing; otherwise
//!    it runs `XADD stream * data <payload>` (the entry carries the `data`
//!    field only, as [`Stream::send`](crate::Stream::send) writes it) and
//!    sets the key to the new entry id with an expiry (`dedup_ttl`).
//! 4. Delete the rows by id and commit.
//!
//! A relay that dies between 3 and 4 leaves its rows in the table (its
//! transaction rolls back); the next relay to claim them finds their dedup
//! keys and adds no second entry, so a consumer sees each message once.
//! This holds as long as the resend comes within `dedup_ttl` of the first
//! send; after that the message is added again (a second entry with a new
//! id, which the consumer's ledger cannot recognise).
//!
//! Ordering: a stream's rows are sent in id order (the order in which the
//! producers' `INSERT`s ran), batch after batch. A row whose transaction
//! commits after a later-numbered row was already sent goes out after it:
//! messages of transactions that overlap in time have no order to keep;
//! those of one producer's successive transactions keep theirs.

use std::time::Duration;

use crate::handle::{Conn, Redis};
use safesync_core::__private::Backoff;
use safesync_core::__private::outbox::{self, OutboxRow};
use safesync_core::{Db, Result};
use tokio_util::sync::CancellationToken;

use crate::conn::{self, COMMAND_TIMEOUT};
use crate::keys::outbox_dedup_key;
use crate::outbox::ensure_outbox;
use crate::stream::DATA_FIELD;
use crate::wake::Wake;

/// Adds the entry unless the row's dedup key says it was added: returns
/// `{1, new id}` or `{0, earlier id}`.
const XADD_ONCE: &str = r"
local earlier = redis.call('GET', KEYS[2])
if earlier then
  return {0, earlier}
end
local id = redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], id, 'EX', ARGV[3])
return {1, id}
";

/// Waits after a failed pass: 100 ms doubling up to 5 s.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Forwards messages written with [`Stream::send_in`](crate::Stream::send_in)
/// to their Redis streams once their transaction committed, then deletes
/// them from the outbox.
///
/// Several relays may run at once (in one process or many): they never
/// send a row twice while they are alive, and a relay killed after adding
/// an entry but before deleting its row leaves a resend that the next
/// relay recognises and skips, so each message is added once. Each
/// stream's messages are added in the order of their rows. The full
/// protocol, and the limits of these promises, are in the module source
/// (`safesync-queue/src/relay.rs`); in short, a resend is recognised
/// within [`dedup_ttl`](Relay::dedup_ttl) of the first send.
///
/// It runs on its own (below) or inside a [`Worker`](crate::Worker)
/// ([`relay_outbox`](crate::Worker::relay_outbox)).
///
/// **Wake-up.** After a pass that found nothing to send, the relay waits
/// for [`poll_interval`](Relay::poll_interval) (default 100 ms). On
/// PostgreSQL it also `LISTEN`s on [`OUTBOX_CHANNEL`](crate::OUTBOX_CHANNEL),
/// on a connection of its own outside the `Db`'s pool, and `send_in`
/// notifies there in its transaction, so a commit wakes the relay at once;
/// the poll is then only the fallback for a notification missed (while
/// that connection was down, say). On SQLite and MySQL/MariaDB the poll
/// alone wakes it: a commit waits up to the interval.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// use std::time::Duration;
/// use safesync_queue::{CancellationToken, Relay};
///
/// let db = safesync_core::Db::connect("sqlite:app.db").await?;
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let stop = CancellationToken::new();
/// let relay = Relay::new(db, redis)
///     .poll_interval(Duration::from_millis(50))
///     .run(stop.clone());
/// # stop.cancel();
/// let summary = relay.await?;
/// println!("sent {}", summary.sent);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Relay {
    db: Db,
    redis: Redis,
    batch: usize,
    poll: Duration,
    dedup_ttl: Duration,
    after_xadd: Option<fn(&str)>,
}

/// What a relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelaySummary {
    /// Rows added to their streams and deleted from the outbox.
    pub sent: u64,
    /// Rows whose entry an earlier relay had added (it stopped before
    /// deleting them): deleted without adding a second entry.
    pub resends_recognised: u64,
}

impl Relay {
    /// A relay from the outbox of `db` to the streams on `redis`: batches
    /// of 100 rows, a poll every 100 ms when the outbox is empty (and on
    /// PostgreSQL a wake-up on every commit's notification), dedup keys
    /// kept for 24 hours.
    ///
    /// ```
    /// # fn demo(db: safesync_core::Db) -> Result<(), safesync_core::Error> {
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let relay = safesync_queue::Relay::new(db, redis);
    /// # let _ = relay; Ok(()) }
    /// ```
    pub fn new(db: Db, redis: impl Into<Redis>) -> Relay {
        Relay {
            db,
            redis: redis.into(),
            batch: 100,
            poll: Duration::from_millis(100),
            dedup_ttl: Duration::from_secs(24 * 3600),
            after_xadd: None,
        }
    }

    /// Rows claimed, sent and deleted per transaction (at least 1).
    ///
    /// ```
    /// # fn demo(relay: safesync_queue::Relay) {
    /// let relay = relay.batch(500);
    /// # let _ = relay; }
    /// ```
    #[must_use]
    pub fn batch(mut self, n: usize) -> Relay {
        self.batch = n.max(1);
        self
    }

    /// How long the relay sleeps when the outbox had nothing to send
    /// (default 100 ms): on SQLite and MySQL/MariaDB the most a committed
    /// message waits for the relay to look, and each poll costs one query.
    /// On PostgreSQL a commit's notification wakes the relay at once, so
    /// the poll only catches what a missed notification announced: a
    /// second or more is reasonable there.
    ///
    /// ```
    /// # fn demo(relay: safesync_queue::Relay) {
    /// let relay = relay.poll_interval(std::time::Duration::from_millis(20));
    /// # let _ = relay; }
    /// ```
    #[must_use]
    pub fn poll_interval(mut self, d: Duration) -> Relay {
        self.poll = d;
        self
    }

    /// How long Redis keeps the key that recognises a resend of a row
    /// (at least 1 s). A relay that stopped between adding an entry and
    /// deleting its row must be followed by another within this time, or
    /// the row's message is added a second time. Each key costs Redis
    /// about 100 bytes until it expires: keep it for `ttl` × messages per
    /// second.
    ///
    /// ```
    /// # fn demo(relay: safesync_queue::Relay) {
    /// let relay = relay.dedup_ttl(std::time::Duration::from_secs(3600));
    /// # let _ = relay; }
    /// ```
    #[must_use]
    pub fn dedup_ttl(mut self, ttl: Duration) -> Relay {
        self.dedup_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Test hook: called with the stream's name after a batch's entries
    /// were added and before its rows are deleted. Not a public API.
    #[doc(hidden)]
    #[must_use]
    pub fn after_xadd_for_tests(mut self, hook: fn(&str)) -> Relay {
        self.after_xadd = Some(hook);
        self
    }

    /// Creates the outbox table if missing, then forwards committed rows
    /// until `stop` is cancelled (a pass under way finishes first).
    /// A failed pass (database or Redis unreachable) is logged and retried
    /// after a back-off of up to 5 s; only the table's creation fails the
    /// call.
    ///
    /// ```no_run
    /// # async fn demo(relay: safesync_queue::Relay) -> Result<(), safesync_core::Error> {
    /// let stop = safesync_queue::CancellationToken::new();
    /// let task = tokio::spawn(relay.run(stop.clone()));
    /// // … on shutdown:
    /// stop.cancel();
    /// # let _ = task; Ok(()) }
    /// ```
    pub async fn run(self, stop: CancellationToken) -> Result<RelaySummary> {
        ensure_outbox(&self.db).await?;
        Ok(self.relay_until(stop).await)
    }

    /// The database whose outbox the relay reads.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// [`Relay::run`] once the outbox table exists: passes until `stop`
    /// is cancelled, failures retried, so it never fails.
    pub(crate) async fn relay_until(self, stop: CancellationToken) -> RelaySummary {
        // Listening before the first pass: a commit after it wakes us.
        let mut wake = Wake::new(&self.db).await;
        let mut conn = None;
        let mut summary = RelaySummary::default();
        let mut failures = 0u32;
        let mut rng = fastrand::Rng::new();
        while !stop.is_cancelled() {
            match self.pass(&mut conn, &mut summary).await {
                Ok(0) => {
                    failures = 0;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = wake.wait(self.poll) => {}
                    }
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    conn = None;
                    failures = failures.saturating_add(1);
                    let wait = RETRY.equal_jitter(failures, &mut rng);
                    tracing::warn!(error = %e, ?wait, "outbox relay pass failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        summary
    }

    /// One pass: forwards every row committed now (and any committed while
    /// it runs), then returns. The outbox table must exist.
    ///
    /// ```no_run
    /// # async fn demo(relay: safesync_queue::Relay) -> Result<(), safesync_core::Error> {
    /// let done = relay.run_once().await?;
    /// println!("sent {}", done.sent);
    /// # Ok(()) }
    /// ```
    pub async fn run_once(&self) -> Result<RelaySummary> {
        let mut summary = RelaySummary::default();
        self.pass(&mut None, &mut summary).await?;
        Ok(summary)
    }

    /// Sends every stream's committed rows; returns how many rows it
    /// handled.
    async fn pass(&self, conn: &mut Option<Conn>, summary: &mut RelaySummary) -> Result<u64> {
        let streams = outbox::streams(&self.db).await?;
        let mut handled = 0;
        for stream in &streams {
            loop {
                let n = self.batch_of(stream, conn, summary).await?;
                handled += n as u64;
                if n < self.batch {
                    break;
                }
            }
        }
        Ok(handled)
    }

    /// Steps 1-4 of the protocol for one batch of `stream`; returns how
    /// many rows it sent and deleted (0: none, or another relay holds the
    /// stream's older rows).
    async fn batch_of(
        &self,
        stream: &str,
        conn: &mut Option<Conn>,
        summary: &mut RelaySummary,
    ) -> Result<usize> {
        let mut tx = self.db.begin().await?;
        let limit = i64::try_from(self.batch).unwrap_or(i64::MAX);
        let rows = outbox::claim(&mut tx, stream, limit).await?;
        let Some(last) = rows.last().map(|r| r.id) else {
            tx.rollback().await?;
            return Ok(0);
        };
        let visible: Vec<i64> = tx
            .fetch_all(
                "SELECT id FROM safesync_queue_outbox WHERE stream = ? AND id <= ? ORDER BY id",
                (stream, last),
            )
            .await?;
        let n = in_order_prefix(&rows, &visible);
        if n == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        let conn = match conn {
            Some(c) => c,
            None => conn.insert(conn::connect(&self.redis, COMMAND_TIMEOUT).await?),
        };
        let ttl = self.dedup_ttl.as_secs().max(1);
        for row in &rows[..n] {
            let (fresh, _entry): (i64, String) = redis::cmd("EVAL")
                .arg(XADD_ONCE)
                .arg(2)
                .arg(stream)
                .arg(outbox_dedup_key(stream, row.id, row.nonce))
                .arg(DATA_FIELD)
                .arg(&row.payload)
                .arg(ttl)
                .query_async(conn)
                .await
                .map_err(|e| conn::redis_err(format!("XADD (outbox) to `{stream}`"), e))?;
            if fresh == 0 {
                summary.resends_recognised += 1;
            }
        }
        if let Some(hook) = self.after_xadd {
            hook(stream);
        }
        for row in &rows[..n] {
            tx.execute_with("DELETE FROM safesync_queue_outbox WHERE id = ?", (row.id,))
                .await?;
        }
        tx.commit().await?;
        summary.sent += n as u64;
        Ok(n)
    }
}

/// How many of the `claimed` rows (in id order) may be sent: those before
/// the first place where `visible` (every id of the stream up to the last
/// claimed one, in order) has a row that was not claimed.
fn in_order_prefix(claimed: &[OutboxRow], visible: &[i64]) -> usize {
    claimed
        .iter()
        .zip(visible)
        .take_while(|(row, id)| row.id == **id)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[i64]) -> Vec<OutboxRow> {
        ids.iter()
            .map(|&id| OutboxRow {
                id,
                nonce: 0,
                payload: String::new(),
            })
            .collect()
    }

    #[test]
    fn a_batch_stops_before_a_row_it_did_not_claim() {
        // Every row claimed: all go.
        assert_eq!(in_order_prefix(&rows(&[1, 2, 3]), &[1, 2, 3]), 3);
        // Another relay holds the older rows 1-2: nothing goes.
        assert_eq!(in_order_prefix(&rows(&[3, 4]), &[1, 2, 3, 4]), 0);
        // Another relay holds row 3 in the middle: only 1-2 go.
        assert_eq!(in_order_prefix(&rows(&[1, 2, 4, 5]), &[1, 2, 3, 4, 5]), 2);
        // Row 2 committed after the claim: only 1 goes.
        assert_eq!(in_order_prefix(&rows(&[1, 3]), &[1, 2, 3]), 1);
    }
}
