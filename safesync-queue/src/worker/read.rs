//! The read stage: one loop per route, on a connection of its own, reads
//! its own pending entries after a (re)connect, due claims, then new
//! entries — in the order [`ReadState`] decides — and hands them to the
//! dispatch stage, taking first the entries whose back-off after a failed
//! delivery is over ([`redeliver`](super::redeliver)). It also creates a
//! deleted group again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;
use safesync_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::commands::{self, Claimer, Cursor};
use super::delivery::Delivery;
use super::dispatch::Dispatcher;
use super::read_plan::{Limits, Next, ReadState};
use super::redeliver::{self, Redeliveries};
use super::report::Event;
use super::route::Route;
use crate::conn::{self, READ_MARGIN, SideConn};
use crate::entry::{self, Entry};
use crate::handle::Redis;
use crate::handler::Body;

/// How long a stopped read may take to return after `CLIENT UNBLOCK`.
const UNBLOCK_GRACE: Duration = Duration::from_secs(1);

/// What every read loop of a worker is given.
pub(crate) struct Reading {
    pub(crate) redis: Redis,
    pub(crate) side: Arc<SideConn>,
    pub(crate) consumer: String,
    pub(crate) limits: Limits,
    pub(crate) dispatch: Dispatcher,
    pub(crate) redeliveries: Arc<Redeliveries>,
}

/// The connection of the blocking reads of `key`, to the node that
/// serves it, and its id for `CLIENT UNBLOCK`.
struct Reader {
    conn: MultiplexedConnection,
    id: Option<i64>,
    /// On a cluster: the reader's node, where `CLIENT UNBLOCK` must go
    /// (the worker's side connection goes wherever a key's slot is).
    node: Option<Node>,
}

/// A cluster node a reader reads from, and a connection to it for
/// `CLIENT UNBLOCK`, opened when first needed.
struct Node {
    client: redis::Client,
    control: Option<MultiplexedConnection>,
}

impl Reader {
    /// Connects to the node serving `key`: the single node, or the master
    /// owning `key`'s slot now (asked again at every reconnect, so a read
    /// follows a `MOVED` or a failover).
    async fn connect(ctx: &Reading, key: &str) -> Result<Reader> {
        let client = ctx.redis.node_for(key).await?;
        let mut conn = conn::connect_named(
            &client,
            ctx.limits.block + READ_MARGIN,
            &format!("safesync-reader-{}", ctx.consumer),
        )
        .await?;
        let id = redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut conn)
            .await
            .ok();
        let node = ctx.redis.is_cluster().then_some(Node {
            client,
            control: None,
        });
        Ok(Reader { conn, id, node })
    }

    /// `CLIENT UNBLOCK <id>` on the reader's node.
    async fn unblock(&mut self, ctx: &Reading, id: i64) -> Result<i64> {
        let mut unblock = redis::cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(id);
        let Some(node) = self.node.as_mut() else {
            return ctx.side.query::<i64>(&unblock, "CLIENT UNBLOCK").await;
        };
        let control = match node.control.as_mut() {
            Some(c) => c,
            None => node
                .control
                .insert(conn::connect_node(&node.client, conn::COMMAND_TIMEOUT).await?),
        };
        let reply = unblock.query_async::<i64>(control).await;
        reply.map_err(|e| {
            if conn::is_connection_error(&e) {
                node.control = None;
            }
            conn::redis_err("CLIENT UNBLOCK", e)
        })
    }
}

/// True when a read's error says its connection is no longer good for it:
/// broken, or (on a cluster) on a node that no longer serves the stream's
/// slot (`MOVED`, `ASK`, or a cluster still failing over).
fn needs_new_reader(e: &redis::RedisError) -> bool {
    conn::is_connection_error(e)
        || matches!(
            conn::code(e),
            Some("MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN" | "READONLY")
        )
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

/// What one loop owns.
struct Loop<'a> {
    ctx: &'a Reading,
    route: Arc<Route>,
    state: ReadState,
    cursor: Cursor,
    plain: bool,
}

/// Runs the loop of `route` until `stop`.
pub(crate) async fn read_loop(ctx: Arc<Reading>, route: Arc<Route>, stop: CancellationToken) {
    let plain = matches!(route.handler.body(), Body::Plain(_));
    let mut me = Loop {
        ctx: &ctx,
        route,
        state: ReadState::new(Instant::now()),
        cursor: Cursor::default(),
        plain,
    };
    let (stream, group) = (me.route.key.clone(), me.route.group().to_owned());
    let group = group.as_str();
    let mut reader: Option<Reader> = None;
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        let Some(free) = ctx.dispatch.free_slots(&stop).await else {
            break;
        };
        let r = match reader.as_mut() {
            Some(r) => r,
            None => match Reader::connect(&ctx, &stream).await {
                Ok(r) => {
                    me.state.reconnected();
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
        let Err(e) = me.step(r, free, &stop).await else {
            backoff.reset();
            continue;
        };
        let redis_error = conn::as_redis_error(&e);
        if redis_error.and_then(conn::code) == Some("NOGROUP") {
            let from = me.state.recreate_from().to_owned();
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
            if let Err(e) = commands::create_group(&ctx.side, &stream, group, &from).await {
                tracing::warn!(error = %e, stream, group, "cannot create the consumer group");
            }
            me.cursor = Cursor::default();
        } else {
            if redis_error.is_some_and(needs_new_reader) {
                reader = None;
            }
            tracing::warn!(error = %e, stream, group, "read failed; retrying");
            if !backoff.wait(&stop).await {
                break;
            }
        }
    }
}

impl Loop<'_> {
    /// One read, as [`ReadState::next`] decides, and its entries handed on.
    async fn step(&mut self, r: &mut Reader, free: usize, stop: &CancellationToken) -> Result<()> {
        let ctx = self.ctx;
        let route = &self.route;
        let (key, group) = (route.key.as_str(), route.group());
        let now = Instant::now();
        let due = ctx.redeliveries.take_due(route.index, now, free.max(1));
        if !due.is_empty() {
            return self.claim_back(due, stop).await;
        }
        match self.state.next(now, free, self.plain, &ctx.limits) {
            Next::OwnPending { from, count } => {
                let entries = read(ctx, r, key, group, count, None, &from, stop, None).await?;
                self.state.read_pending(&entries);
                self.redeliver(entries, stop).await
            }
            Next::Claim { count } => {
                let claimer = Claimer {
                    side: &ctx.side,
                    consumer: &ctx.consumer,
                    min_idle: ctx.limits.claim_idle,
                };
                let claim = claimer
                    .autoclaim(key, group, &mut self.cursor, count)
                    .await?;
                self.state
                    .claimed(now, &claim.claimed, self.cursor.wrapped(), &ctx.limits);
                let n = claim.claimed.len() as u64;
                if n > 0 {
                    route.report.add(Event::Claimed, n);
                    tracing::info!(stream = key, group, claimed = n, "claimed idle entries");
                }
                let deleted = claim
                    .deleted
                    .into_iter()
                    .map(|id| Entry { id, fields: None });
                self.redeliver(deleted.chain(claim.claimed).collect(), stop)
                    .await
            }
            Next::New { count, block } => {
                // Woken when the next back-off is over, or one is scheduled.
                let until_due = ctx.redeliveries.next_due(route.index).map(|at| {
                    at.saturating_duration_since(now)
                        .max(Duration::from_millis(1))
                });
                let block = until_due.map_or(block, |d| block.min(d));
                let wake = ctx.redeliveries.wake(route.index);
                let entries = read(ctx, r, key, group, count, Some(block), ">", stop, wake).await?;
                self.state.read_new(&entries);
                let deliveries = entries
                    .into_iter()
                    .map(|entry| Delivery {
                        route: Arc::clone(route),
                        entry,
                        deliveries: 1,
                    })
                    .collect();
                ctx.dispatch
                    .new_entries(deliveries, ctx.limits.per_transaction, stop)
                    .await;
                Ok(())
            }
        }
    }

    /// Claims back the entries `due` after their back-off (`XCLAIM` with
    /// the least of their delays as the minimum idle time) and hands them
    /// on.
    async fn claim_back(
        &self,
        due: Vec<(String, Duration)>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let ctx = self.ctx;
        let min_idle = due.iter().map(|(_, d)| *d).min().unwrap_or_default();
        let route = &self.route;
        // One running here (claimed meanwhile after `claim_idle`) is left
        // alone: claiming it would only raise its delivery count.
        let ids: Vec<String> = due
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !ctx.dispatch.is_in_flight(route, id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let entries = redeliver::claim(
            &ctx.side,
            &route.key,
            route.group(),
            &ctx.consumer,
            min_idle,
            &ids,
        )
        .await?;
        route.report.add(Event::Claimed, entries.len() as u64);
        self.redeliver(entries, stop).await
    }

    /// Hands on entries delivered again (own pending ones, or claimed),
    /// each alone with its delivery count: deleted ones too (to be
    /// acknowledged), not those running here, nor those no longer pending.
    async fn redeliver(&self, entries: Vec<Entry>, stop: &CancellationToken) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let route = &self.route;
        let delivery = |entry, deliveries| Delivery {
            route: Arc::clone(route),
            entry,
            deliveries,
        };
        let mut out = Vec::with_capacity(entries.len());
        let mut live = Vec::with_capacity(entries.len());
        for e in entries {
            if e.fields.is_none() {
                out.push(delivery(e, 0));
            } else if !self.ctx.dispatch.is_in_flight(route, &e.id) {
                live.push(e);
            }
        }
        let counts =
            commands::delivery_counts(&self.ctx.side, &route.key, route.group(), &live).await?;
        for e in live {
            // Not pending any more: acknowledged by someone in between.
            if let Some(&n) = counts.get(&e.id) {
                out.push(delivery(e, n));
            }
        }
        self.ctx.dispatch.each(out, stop).await;
        Ok(())
    }
}

/// When `stop` is cancelled or `wake` notified.
async fn woken(stop: &CancellationToken, wake: Option<&tokio::sync::Notify>) {
    match wake {
        Some(wake) => tokio::select! {
            () = stop.cancelled() => {}
            () = wake.notified() => {}
        },
        None => stop.cancelled().await,
    }
}

/// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS s from`. A blocking
/// read ends at once on `stop` (or `wake`: a back-off is over sooner): `CLIENT UNBLOCK` from the side
/// connection makes it return empty.
#[allow(clippy::too_many_arguments)] // reason: two call sites; a struct would only rename them
async fn read(
    ctx: &Reading,
    r: &mut Reader,
    stream: &str,
    group: &str,
    count: usize,
    block: Option<Duration>,
    from: &str,
    stop: &CancellationToken,
    wake: Option<&tokio::sync::Notify>,
) -> Result<Vec<Entry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(&ctx.consumer)
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
        () = woken(stop, wake), if block.is_some() => {
            let Some(id) = r.id else {
                // No id to unblock: drop the read; what it may have been
                // handed stays pending for the next run or a claim.
                return Ok(Vec::new());
            };
            if let Err(e) = r.unblock(ctx, id).await {
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
