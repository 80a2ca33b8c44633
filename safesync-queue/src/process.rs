//! One message: decode → transaction (ledger row, handler) → commit → ack
//! for a `Handler`, decode → handler → ack for a `PlainHandler`, or a dead
//! letter.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use crate::ack::{self, AckMsg};
use crate::dead_letter::{Burial, bury, cap_reason};
use crate::entry::Entry;
use crate::handler::{Body, Decoded, ErasedHandler, PlainBody, TxBody};
use crate::ledger::{self, Recorded};
use crate::metrics::{Count, Outcome};
use crate::worker::{HandlerSettings, Shared, Stats};

/// Most handler errors remembered for dead-letter reasons.
const MAX_REMEMBERED_ERRORS: usize = 10_000;

/// An entry handed to this worker, with Redis's delivery count.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The index of the read source it came from (the handler's stream or
    /// its group's replay stream), in `Shared::sources` and
    /// `Shared::handlers` alike.
    pub(crate) handler: usize,
    pub(crate) entry: Entry,
    pub(crate) deliveries: u64,
}

/// The key of entry `id` of `handler` among those in flight: its id's two
/// numbers (`<ms>-<seq>`, what Redis always sends), so that tracking an
/// entry allocates nothing; any other text is hashed.
pub(crate) type InFlightKey = (usize, u64, u64);

fn in_flight_key(handler: usize, id: &str) -> InFlightKey {
    let parsed = id
        .split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
    match parsed {
        Some((ms, seq)) if ms != u64::MAX => (handler, ms, seq),
        _ => {
            use std::hash::{BuildHasher as _, RandomState};
            static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
            (
                handler,
                u64::MAX,
                STATE.get_or_init(RandomState::new).hash_one(id),
            )
        }
    }
}

/// Starts handling `group` (entries of one handler; most often one) in a
/// task of its own, holding `permit` until done: one entry alone, several
/// of a transactional handler in one shared transaction (see
/// [`Worker::messages_per_transaction`](crate::Worker::messages_per_transaction)),
/// several of a plain handler one after another. Entries already being
/// handled here are left alone.
pub(crate) fn dispatch(shared: &Arc<Shared>, group: Vec<Delivery>, permit: OwnedSemaphorePermit) {
    let mut keys = Vec::with_capacity(group.len());
    let group: Vec<Delivery> = match shared.in_flight.lock() {
        Ok(mut set) => group
            .into_iter()
            .filter(|d| {
                let key = in_flight_key(d.handler, &d.entry.id);
                let new = set.insert(key);
                if new {
                    keys.push(key);
                }
                new
            })
            .collect(),
        Err(_) => group,
    };
    let Some(first) = group.first() else { return };
    let index = first.handler;
    let h = &shared.handlers[index];
    let n = group.len() as u64;
    Stats::add(&shared.stats.read, n);
    shared.labels[index].add(Count::Read, n);
    let span = tracing::info_span!(
        "safesync.queue.message",
        stream = h.stream(),
        group = h.group(),
        id = %first.entry.id,
        deliveries = first.deliveries,
        count = n,
    );
    let shared = Arc::clone(shared);
    shared.tracker.clone().spawn(
        async move {
            let _permit = permit;
            let run = AssertUnwindSafe(process_group(&shared, group)).catch_unwind();
            tokio::select! {
                done = run => if let Err(panic) = done {
                    // A bug of the worker's own: the entries stay pending and
                    // are delivered again (their in-flight marks go below).
                    Stats::add(&shared.stats.failed, n);
                    tracing::error!(
                        panic = %panic_message(&*panic),
                        "a message task panicked; its entries stay pending and are delivered again"
                    );
                },
                () = shared.abort.cancelled() => {
                    Stats::add(&shared.stats.abandoned, n);
                    tracing::warn!("handlers cancelled at the drain deadline; the entries stay pending");
                }
            }
            if let Ok(mut set) = shared.in_flight.lock() {
                for key in &keys {
                    set.remove(key);
                }
            }
        }
        .instrument(span),
    );
}

/// The id the ledger records for a delivery: the entry's, or for an
/// entry replayed from the dead letters, the id it had in the stream (so
/// that the replay of an entry whose effect committed is recognised).
fn ledger_id<'d>(shared: &Shared, d: &'d Delivery) -> &'d str {
    let original = shared.sources[d.handler]
        .replayed
        .then(|| d.entry.field(crate::dead_letter::REPLAY_OF))
        .flatten()
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|id| crate::entry::is_entry_id(id));
    original.unwrap_or(&d.entry.id)
}

/// True when the entry `id` of `handler` is being handled here.
pub(crate) fn is_in_flight(shared: &Shared, handler: usize, id: &str) -> bool {
    let key = in_flight_key(handler, id);
    shared.in_flight.lock().is_ok_and(|set| set.contains(&key))
}

/// How a delivery ended well.
#[derive(Clone, Copy)]
enum Done {
    /// The transaction committed, or a plain handler returned `Ok`.
    Committed,
    /// The ledger had the entry: nothing ran.
    Duplicate,
}

/// Why a delivery failed; `handler` when the handler itself failed (an
/// error or a panic) rather than the database around it.
struct Failure {
    reason: String,
    handler: bool,
    outcome: Outcome,
}

async fn process(shared: &Shared, d: Delivery) {
    let h = &*shared.handlers[d.handler];
    if d.entry.fields.is_none() {
        trimmed(shared, d.handler, d.entry.id);
        return;
    }
    let started;
    let result = match h.body() {
        Body::Tx(body) => {
            let payload = match decode(h, body, &d.entry) {
                Ok(p) => p,
                Err(reason) => return undecodable(shared, &d, &reason).await,
            };
            started = Instant::now();
            // Boxed: the transaction's (large) state is not part of every
            // message task's future, a plain handler's included.
            // Bounded inside, around the handler, so that a timed-out
            // transaction is rolled back before the next begins (dropping
            // it would free SQLite's gate before its connection's rollback).
            Box::pin(transaction(shared, h, body, &d, payload)).await
        }
        Body::Plain(body) => {
            let run = match data(h, &d.entry) {
                Ok(json) => start_plain(body, json),
                Err(reason) => return undecodable(shared, &d, &reason).await,
            };
            let run = match run {
                Ok(run) => run,
                Err(e) => return undecodable(shared, &d, &not_json(h, &d.entry, &e)).await,
            };
            started = Instant::now();
            bounded(shared, d.handler, plain(run)).await
        }
    };
    let latency = started.elapsed();
    match result {
        Ok(done) => succeeded(shared, d, done, latency),
        Err(f) => {
            let f_reason = cap_reason(&f.reason);
            Stats::add(&shared.stats.failed, 1);
            shared.labels[d.handler].handled(f.outcome, latency);
            let max = shared.config.max_deliveries;
            if f.handler && d.deliveries >= max {
                let reason = format!(
                    "the handler failed on delivery {} of at most {max}: {}",
                    d.deliveries, f_reason
                );
                tracing::warn!(%reason, "giving up: moving the entry to the dead letters");
                Box::pin(dead_letter(shared, &d, &reason)).await;
            } else {
                tracing::warn!(reason = %f_reason, "handling failed: the entry stays pending");
                if let Ok(mut errors) = shared.last_errors.lock() {
                    // Only for messages; bounded, should entries be taken
                    // over by other workers and never come back here.
                    if errors.len() >= MAX_REMEMBERED_ERRORS {
                        errors.clear();
                    }
                    errors.insert((d.handler, d.entry.id.clone()), f_reason.into_owned());
                }
            }
        }
    }
}

/// Books a delivery that ended well and acknowledges it.
fn succeeded(shared: &Shared, d: Delivery, done: Done, latency: std::time::Duration) {
    let outcome = match done {
        Done::Committed => {
            Stats::add(&shared.stats.processed, 1);
            Outcome::Ok
        }
        Done::Duplicate => {
            Stats::add(&shared.stats.duplicates, 1);
            tracing::info!(id = %d.entry.id, "already processed (ledger): acknowledging only");
            Outcome::Duplicate
        }
    };
    shared.labels[d.handler].handled(outcome, latency);
    if let Ok(mut errors) = shared.last_errors.lock()
        && !errors.is_empty()
    {
        errors.remove(&(d.handler, d.entry.id.clone()));
    }
    let skip = shared.skip_acks.load(Ordering::Relaxed) > 0
        && shared
            .skip_acks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
    if skip {
        tracing::warn!("test hook: not acknowledging a committed entry");
    } else {
        let _ = shared.acks.send(AckMsg::Ack {
            handler: d.handler,
            id: d.entry.id,
        });
    }
}

/// One entry: [`process`]. Several of a plain handler: each in turn.
/// Several of a transactional handler: one shared transaction — begin, one
/// ledger statement for all, each handler in turn, one commit, then every
/// ack. When anything fails, the transaction rolls back and each entry is
/// handled alone ([`process`]), so no effect is lost or doubled.
async fn process_group(shared: &Shared, mut group: Vec<Delivery>) {
    if group.len() <= 1 {
        if let Some(d) = group.pop() {
            process(shared, d).await;
        }
        return;
    }
    let h = &*shared.handlers[group[0].handler];
    let Body::Tx(body) = h.body() else {
        for d in group {
            process(shared, d).await;
        }
        return;
    };
    // Trimmed and undecodable entries are dealt with at once.
    let mut ready = Vec::with_capacity(group.len());
    for d in group {
        if d.entry.fields.is_none() {
            trimmed(shared, d.handler, d.entry.id);
            continue;
        }
        match decode(h, body, &d.entry) {
            Ok(p) => ready.push((d, p)),
            Err(reason) => undecodable(shared, &d, &reason).await,
        }
    }
    if ready.len() <= 1 {
        for (d, _) in ready {
            process(shared, d).await;
        }
        return;
    }
    let started = Instant::now();
    let (group, payloads): (Vec<Delivery>, Vec<Decoded>) = ready.into_iter().unzip();
    match shared_transaction(shared, h, body, &group, payloads).await {
        Ok(()) => {
            let latency = started.elapsed();
            for d in group {
                succeeded(shared, d, Done::Committed, latency);
            }
        }
        Err(reason) => {
            let reason = cap_reason(&reason);
            tracing::debug!(%reason, count = group.len(), "shared transaction rolled back: handling each entry alone");
            for d in group {
                process(shared, d).await;
            }
        }
    }
}

/// Begin, the ledger rows of all, every handler, commit; `Err` (rolled
/// back) with the reason when any step fails.
async fn shared_transaction(
    shared: &Shared,
    h: &dyn ErasedHandler,
    body: &dyn TxBody,
    group: &[Delivery],
    payloads: Vec<Decoded>,
) -> Result<(), String> {
    let mut tx = shared
        .db
        .begin()
        .await
        .map_err(|e| format!("cannot begin a transaction: {e}"))?;
    if shared.config.ledger {
        let ids: Vec<&str> = group.iter().map(|d| ledger_id(shared, d)).collect();
        ledger::record_all(&mut tx, h.stream(), h.group(), &ids)
            .await
            .map_err(|e| format!("cannot write the ledger rows (one may be there already): {e}"))?;
    }
    let limit = shared.settings[group[0].handler].timeout;
    let deadline = tokio::time::Instant::now() + limit;
    for (d, payload) in group.iter().zip(payloads) {
        let run = AssertUnwindSafe(body.handle(&mut tx, payload)).catch_unwind();
        let failure = match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(Ok(()))) => continue,
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(panic)) => format!("the handler panicked: {}", panic_message(&*panic)),
            Err(_) => timed_out(limit),
        };
        if let Err(e) = tx.rollback().await {
            tracing::warn!(error = %e, "rollback after a failed handler failed");
        }
        return Err(format!("entry {}: {failure}", d.entry.id));
    }
    tx.commit()
        .await
        .map_err(|e| format!("cannot commit: {e}"))?;
    Stats::add(&shared.stats.transactions, 1);
    Ok(())
}

/// An entry that cannot be handled: moved to the dead letters at once.
async fn undecodable(shared: &Shared, d: &Delivery, reason: &str) {
    let reason = &*cap_reason(reason);
    tracing::warn!(%reason, "undecodable entry: moving it to the dead letters");
    // Boxed: rare, and its state would enlarge every message task.
    Box::pin(dead_letter(shared, d, reason)).await;
}

/// Why an entry cannot be decoded, as a message.
fn cannot_decode(h: &dyn ErasedHandler, entry: &Entry, reason: String) -> String {
    let what = format!(
        "entry {} of `{}` as `{}`",
        entry.id,
        h.stream(),
        h.payload_type()
    );
    safesync_core::Error::Decode { what, reason }.to_string()
}

/// The JSON text in the entry's `data` field, or why it is not there.
fn data<'e>(h: &dyn ErasedHandler, entry: &'e Entry) -> Result<&'e str, String> {
    let Some(data) = entry.field(crate::DATA_FIELD) else {
        let reason = format!(
            "it has no `{}` field (its fields: {})",
            crate::DATA_FIELD,
            entry.field_names()
        );
        return Err(cannot_decode(h, entry, reason));
    };
    std::str::from_utf8(data).map_err(|e| {
        let reason = format!("its `{}` field is not UTF-8: {e}", crate::DATA_FIELD);
        cannot_decode(h, entry, reason)
    })
}

/// The entry's payload for a transactional handler, or why it has none
/// (a `Deserialize` that panics included).
fn decode(h: &dyn ErasedHandler, body: &dyn TxBody, entry: &Entry) -> Result<Decoded, String> {
    let json = data(h, entry)?;
    match std::panic::catch_unwind(AssertUnwindSafe(|| body.decode(json))) {
        Ok(decoded) => decoded.map_err(|e| not_json(h, entry, &e)),
        Err(panic) => {
            let reason = format!(
                "decoding its `{}` field panicked: {}",
                crate::DATA_FIELD,
                panic_message(&*panic)
            );
            Err(cannot_decode(h, entry, reason))
        }
    }
}

/// Why the `data` field is not the handler's payload, from serde's `e`.
fn not_json(h: &dyn ErasedHandler, entry: &Entry, e: &str) -> String {
    let reason = format!("its `{}` field is not such JSON: {e}", crate::DATA_FIELD);
    cannot_decode(h, entry, reason)
}

/// A plain handler's run, decoded and started; `Err` when the payload does
/// not decode. A handler that panics while starting is started as a
/// failed run.
fn start_plain<'h>(
    body: &'h dyn PlainBody,
    json: &str,
) -> Result<futures_core::future::BoxFuture<'h, Result<(), safesync_core::Error>>, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| body.start(json))) {
        Ok(started) => started,
        Err(panic) => {
            let message = panic_message(&*panic);
            Ok(Box::pin(async move {
                std::panic::resume_unwind(Box::new(message));
            }))
        }
    }
}

/// A plain handler: its run, no transaction, no ledger.
async fn plain(
    run: futures_core::future::BoxFuture<'_, Result<(), safesync_core::Error>>,
) -> Result<Done, Failure> {
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(Ok(())) => Ok(Done::Committed),
        Ok(Err(e)) => Err(Failure {
            reason: e.to_string(),
            handler: true,
            outcome: Outcome::Error,
        }),
        Err(panic) => Err(Failure {
            reason: format!("the handler panicked: {}", panic_message(&*panic)),
            handler: true,
            outcome: Outcome::Panic,
        }),
    }
}

/// Why a delivery was cut off by its timeout.
fn timed_out(limit: Duration) -> String {
    format!("timed out after {limit:?} (cancelled and rolled back)")
}

/// Runs a delivery (every attempt of it) within its handler's timeout;
/// past it, the run is dropped — its transaction rolls back — and the
/// delivery fails as the handler's own failure.
async fn bounded(
    shared: &Shared,
    handler: usize,
    run: impl Future<Output = Result<Done, Failure>>,
) -> Result<Done, Failure> {
    let limit = shared.settings[handler].timeout;
    let Ok(result) = tokio::time::timeout(limit, run).await else {
        Stats::add(&shared.stats.timed_out, 1);
        return Err(Failure {
            reason: timed_out(limit),
            handler: true,
            outcome: Outcome::Timeout,
        });
    };
    result
}

/// How far the last attempt of a delivery got, to word its failure.
enum Stage {
    Begin,
    Ledger,
    /// The handler ran; `retryable` when its error was one the policy
    /// retries (so a failure returned after it came from a later `BEGIN`).
    Handler {
        retryable: bool,
    },
    Panicked(String),
    /// Past the handler timeout.
    TimedOut,
    Commit,
}

/// Begin, ledger row, handler, commit — again in a new transaction, under
/// the handler's retry policy, for what [`Db::retry`](safesync_core::Db::retry)
/// retries (it runs the attempts: the same decision and back-off).
async fn transaction(
    shared: &Shared,
    h: &dyn ErasedHandler,
    body: &dyn TxBody,
    d: &Delivery,
    payload: Decoded,
) -> Result<Done, Failure> {
    let id = ledger_id(shared, d);
    let HandlerSettings {
        retry: policy,
        timeout: limit,
    } = shared.settings[d.handler];
    // The timeout counts from the first handler run (after `BEGIN` and the
    // ledger row, which keep the database's own timeouts: on SQLite `BEGIN`
    // queues for the write lock) over every later attempt and back-off.
    let deadline = std::sync::OnceLock::new();
    // The first attempt takes the payload decoded already; a retry decodes
    // it again (the handler consumed the first).
    let first = std::sync::Mutex::new(Some(payload));
    let stage = std::sync::Mutex::new(Stage::Begin);
    let set = |s: Stage| {
        if let Ok(mut g) = stage.lock() {
            *g = s;
        }
    };
    let attempts = AtomicU32::new(0);
    let result = shared
        .db
        .retry(policy, |tx| {
            let (first, set, attempts, deadline) = (&first, &set, &attempts, &deadline);
            Box::pin(async move {
                if attempts.fetch_add(1, Ordering::Relaxed) > 0 {
                    Stats::add(&shared.stats.retried, 1);
                }
                if deadline
                    .get()
                    .is_some_and(|d| tokio::time::Instant::now() >= *d)
                {
                    // The back-off of a retry ran past the deadline.
                    set(Stage::TimedOut);
                    return Err(safesync_core::Error::Config(timed_out(limit)));
                }
                set(Stage::Ledger);
                if shared.config.ledger {
                    match ledger::record(tx, h.stream(), h.group(), id).await? {
                        Recorded::New => {}
                        Recorded::AlreadyProcessed => {
                            set(Stage::Commit);
                            return Ok(Done::Duplicate);
                        }
                    }
                }
                let payload = match first.lock().ok().and_then(|mut p| p.take()) {
                    Some(p) => p,
                    None => decode(h, body, &d.entry).map_err(|reason| {
                        safesync_core::Error::Decode {
                            what: format!("entry {} again, for a retry", d.entry.id),
                            reason,
                        }
                    })?,
                };
                set(Stage::Handler { retryable: false });
                let deadline = *deadline.get_or_init(|| tokio::time::Instant::now() + limit);
                let run = AssertUnwindSafe(body.handle(tx, payload)).catch_unwind();
                // The handler's future is dropped at the deadline; `retry`
                // then rolls the transaction back (an error it does not
                // retry) before another one begins.
                let Ok(run) = tokio::time::timeout_at(deadline, run).await else {
                    set(Stage::TimedOut);
                    return Err(safesync_core::Error::Config(timed_out(limit)));
                };
                match run {
                    Ok(Ok(())) => {
                        set(Stage::Commit);
                        Ok(Done::Committed)
                    }
                    Ok(Err(e)) => {
                        set(Stage::Handler {
                            retryable: policy.retries(&e),
                        });
                        Err(e)
                    }
                    Err(panic) => {
                        let message = panic_message(&*panic);
                        set(Stage::Panicked(message.clone()));
                        // Not retryable: `retry` returns it at once.
                        Err(safesync_core::Error::Config(message))
                    }
                }
            })
        })
        .await;
    let e = match result {
        Ok(done) => {
            Stats::add(&shared.stats.transactions, 1);
            return Ok(done);
        }
        Err(e) => e,
    };
    let stage = stage
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if matches!(stage, Stage::TimedOut) {
        Stats::add(&shared.stats.timed_out, 1);
        return Err(Failure {
            reason: timed_out(limit),
            handler: true,
            outcome: Outcome::Timeout,
        });
    }
    Err(worded(&e, stage, attempts.into_inner()))
}

/// The failure of a delivery whose last error is `e`, from how far its
/// last attempt got (`stage`) and how many attempts ran (`ran`).
fn worded(e: &safesync_core::Error, mut stage: Stage, ran: u32) -> Failure {
    let db_failure = |what: &str| Failure {
        reason: format!("{what}: {e}"),
        handler: false,
        outcome: Outcome::Error,
    };
    // The error came from a `BEGIN` after the last attempt that ran: the
    // attempts `retry` counted outnumber those that ran, or the handler's
    // error was retried and the next `BEGIN` failed for good.
    let begin_failed = match e {
        safesync_core::Error::RetriesExhausted { attempts, .. } => *attempts > ran,
        _ => matches!(stage, Stage::Handler { retryable: true }),
    };
    if begin_failed {
        stage = Stage::Begin;
    }
    match stage {
        Stage::Begin => db_failure("cannot begin a transaction"),
        Stage::Ledger => db_failure("cannot write the ledger row"),
        Stage::Commit => db_failure("cannot commit"),
        Stage::Handler { .. } => Failure {
            reason: e.to_string(),
            handler: true,
            outcome: Outcome::Error,
        },
        Stage::TimedOut => Failure {
            reason: e.to_string(),
            handler: true,
            outcome: Outcome::Timeout,
        },
        Stage::Panicked(message) => Failure {
            reason: format!("the handler panicked: {message}"),
            handler: true,
            outcome: Outcome::Panic,
        },
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic payload)".to_owned())
}

/// Acknowledges an entry that was deleted or trimmed while pending.
pub(crate) fn trimmed(shared: &Shared, handler: usize, id: String) {
    let h = &shared.handlers[handler];
    Stats::add(&shared.stats.trimmed, 1);
    shared.labels[handler].add(Count::Trimmed, 1);
    tracing::info!(%id, stream = h.stream(), "pending entry was deleted or trimmed: acknowledging it");
    let _ = shared.acks.send(AckMsg::Ack { handler, id });
}

/// Moves the entry to its group's dead letters and acknowledges it,
/// atomically.
/// When Redis fails, the entry stays pending and is tried again later.
pub(crate) async fn dead_letter(shared: &Shared, d: &Delivery, reason: &str) {
    let h = &shared.handlers[d.handler];
    let reason = &*cap_reason(reason);
    let source = &shared.sources[d.handler];
    let pipe = bury(
        &d.entry,
        &Burial {
            stream: h.stream(),
            key: &source.key,
            replayed: source.replayed,
            group: h.group(),
            consumer: &shared.config.consumer,
            deliveries: d.deliveries,
            reason,
        },
    );
    match shared
        .side
        .pipe::<(String, i64)>(
            &pipe,
            &format!("dead-lettering {} of `{}`", d.entry.id, h.stream()),
        )
        .await
    {
        Ok((_dead_id, acked)) => {
            Stats::add(&shared.stats.dead_lettered, 1);
            shared.labels[d.handler].add(Count::DeadLettered, 1);
            ack::count(shared, d.handler, acked);
            if let Ok(mut errors) = shared.last_errors.lock() {
                errors.remove(&(d.handler, d.entry.id.clone()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot move the entry to the dead letters; it stays pending");
        }
    }
}
