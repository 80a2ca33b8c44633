//! The run stage: decodes a delivery's payload and runs its handler —
//! alone, or several of a transactional handler in one shared transaction
//! (falling back to each alone when that fails) — every run through the one
//! [`run_handler`], which catches panics and applies the deadline. What
//! came of each delivery goes on to the settle stage as an [`Outcome`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use safesync_core::{Db, Error};

use super::decode::{decode, start_plain};
use super::delivery::{Delivery, Failure, Outcome};
use super::pace::{Counted, Pacing, Runs};
use super::report::Event;
use super::settle::Settler;
use crate::handler::{Body, Decoded, TxBody, panic_message};
use crate::ledger;
use crate::metrics::Outcome as Timed;
use safesync_core::__private::ledger::{Row, retry_recorded};
use safesync_core::Tx;

/// How one run of a handler ended.
#[derive(Debug)]
pub(crate) enum Ran {
    Ok,
    Err(Error),
    /// It panicked, while starting or running: the panic's message.
    Panicked(String),
    /// Past its deadline: its future was dropped.
    TimedOut,
}

/// Runs a handler: starts it with `start`, and runs the future it returns
/// until `deadline`. Every handler run of the worker goes through here: a
/// plain handler's, each attempt of a transactional one, each handler of a
/// shared transaction.
pub(crate) async fn run_handler<F>(start: impl FnOnce() -> F, deadline: tokio::time::Instant) -> Ran
where
    F: Future<Output = safesync_core::Result<()>>,
{
    let run = match std::panic::catch_unwind(AssertUnwindSafe(start)) {
        Ok(run) => run,
        Err(panic) => return Ran::Panicked(panic_message(&*panic)),
    };
    match tokio::time::timeout_at(deadline, AssertUnwindSafe(run).catch_unwind()).await {
        Err(_) => Ran::TimedOut,
        Ok(Ok(Ok(()))) => Ran::Ok,
        Ok(Ok(Err(e))) => Ran::Err(e),
        Ok(Err(panic)) => Ran::Panicked(panic_message(&*panic)),
    }
}

/// Why a delivery was cut off by its timeout.
fn timed_out(limit: Duration) -> String {
    format!("timed out after {limit:?} (cancelled and rolled back)")
}

/// The failure of a handler's own run.
fn handler_failed(reason: String, timed: Timed) -> Outcome {
    Outcome::Failed(Failure {
        reason,
        handler: true,
        timed,
    })
}

/// What a handler's error `e` comes to: a rejection, or a failure of
/// the handler.
fn handler_error(e: &Error) -> Outcome {
    match e.root() {
        Error::Rejected(reason) => Outcome::Rejected(reason.clone()),
        _ => handler_failed(e.to_string(), Timed::Error),
    }
}

/// The narrow handle to the run stage: the database, whether to write the
/// ledger, and where outcomes go.
#[derive(Clone)]
pub(crate) struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    ledger: bool,
    settle: Settler,
    /// How quick each plain handler is lately.
    pacing: Pacing,
}

impl Runner {
    pub(crate) fn new(db: Db, ledger: bool, settle: Settler) -> Runner {
        Runner {
            inner: Arc::new(Inner {
                db,
                ledger,
                settle,
                pacing: Pacing::new(),
            }),
        }
    }

    /// The time per entry of route `route`'s plain handler lately (see
    /// [`Pacing`]).
    pub(crate) fn per_entry(&self, route: usize) -> Option<Duration> {
        self.inner.pacing.per_entry(route)
    }

    /// Handles `group` (entries of one route; most often one): one entry
    /// alone; several of a plain handler one after another; several of a
    /// transactional handler in one shared transaction — begin, one ledger
    /// statement for all, each handler in turn, one commit — and when
    /// anything in it fails, each entry alone, so no effect is lost or
    /// doubled.
    ///
    /// A plain handler's share stops after a run that waited (its future
    /// went pending): the entries not run yet are returned, for dispatch to
    /// share out among the free slots. Otherwise nothing is returned.
    pub(crate) async fn run(&self, group: Vec<Delivery>) -> Vec<Delivery> {
        let Some(first) = group.first() else {
            return Vec::new();
        };
        let route = Arc::clone(&first.route);
        let h = &*route.handler;
        let body = match h.body() {
            Body::Tx(body) if group.len() > 1 => body,
            _ => {
                // Alone, or a plain handler's share one after another,
                // until a run waits; the plain runs pace the next shares.
                let mut runs = Runs::default();
                let mut group = group.into_iter();
                for d in group.by_ref() {
                    if let Some((took, polls)) = self.one(d, None).await {
                        runs.add(took, polls);
                        if runs.waited {
                            break;
                        }
                    }
                }
                if !runs.is_empty() {
                    self.inner.pacing.record(route.index, runs);
                }
                return group.collect();
            }
        };
        // Entries that cannot run are settled at once.
        let mut ready = Vec::with_capacity(group.len());
        for d in group {
            if let Some(outcome) = self.screen(&d) {
                self.inner.settle.settle(d, outcome, None).await;
                continue;
            }
            match decode(h, body, &d.entry) {
                Ok(p) => ready.push((d, p)),
                Err(reason) => {
                    self.inner
                        .settle
                        .settle(d, Outcome::Undecodable(reason), None)
                        .await;
                }
            }
        }
        if ready.len() <= 1 {
            for (d, p) in ready {
                self.one(d, Some(p)).await;
            }
            return Vec::new();
        }
        let started = Instant::now();
        let (group, payloads): (Vec<Delivery>, Vec<Decoded>) = ready.into_iter().unzip();
        match self.shared_transaction(body, &group, payloads).await {
            Ok(()) => {
                let latency = started.elapsed();
                for d in group {
                    self.inner
                        .settle
                        .settle(d, Outcome::Committed, Some(latency))
                        .await;
                }
            }
            Err(reason) => {
                let reason = crate::dead_letter::cap_reason(&reason);
                tracing::debug!(%reason, count = group.len(), "shared transaction rolled back: handling each entry alone");
                for d in group {
                    self.one(d, None).await;
                }
            }
        }
        Vec::new()
    }

    /// What makes an entry not run: deleted while pending, or delivered
    /// more often than allowed.
    fn screen(&self, d: &Delivery) -> Option<Outcome> {
        if d.entry.fields.is_none() {
            Some(Outcome::Trimmed)
        } else if d.deliveries > self.inner.settle.max_deliveries() {
            Some(Outcome::OverLimit)
        } else {
            None
        }
    }

    /// One delivery alone (`payload`: decoded already), then settled; for
    /// a plain handler that ran, how long it took and how often its future
    /// was polled, for [`Pacing`].
    async fn one(&self, d: Delivery, payload: Option<Decoded>) -> Option<(Duration, u32)> {
        let settle = &self.inner.settle;
        if let Some(outcome) = self.screen(&d) {
            settle.settle(d, outcome, None).await;
            return None;
        }
        let route = Arc::clone(&d.route);
        let h = &*route.handler;
        let started;
        let mut paced = None;
        let outcome = match h.body() {
            Body::Tx(body) => {
                let payload = match payload.map_or_else(|| decode(h, body, &d.entry), Ok) {
                    Ok(p) => p,
                    Err(reason) => {
                        settle.settle(d, Outcome::Undecodable(reason), None).await;
                        return None;
                    }
                };
                started = Instant::now();
                // Boxed: the transaction's (large) state is not part of
                // every message task's future, a plain handler's included.
                Box::pin(self.transaction(body, &d, payload)).await
            }
            Body::Plain(body) => {
                let run = match start_plain(h, body, &d.entry) {
                    Ok(run) => run,
                    Err(reason) => {
                        settle.settle(d, Outcome::Undecodable(reason), None).await;
                        return None;
                    }
                };
                started = Instant::now();
                let deadline = tokio::time::Instant::now() + route.timeout;
                let polls = AtomicU32::new(0);
                let run = Counted {
                    inner: run,
                    polls: &polls,
                };
                let ran = run_handler(move || run, deadline).await;
                paced = Some((started.elapsed(), polls.into_inner()));
                match ran {
                    Ran::Ok => Outcome::Committed,
                    Ran::Err(e) => handler_error(&e),
                    Ran::Panicked(m) => {
                        handler_failed(format!("the handler panicked: {m}"), Timed::Panic)
                    }
                    Ran::TimedOut => {
                        route.report.add(Event::TimedOut, 1);
                        handler_failed(timed_out(route.timeout), Timed::Timeout)
                    }
                }
            }
        };
        settle.settle(d, outcome, Some(started.elapsed())).await;
        paced
    }

    /// Begin, the ledger rows of all, every handler, commit; `Err` (rolled
    /// back) with the reason when any step fails.
    async fn shared_transaction(
        &self,
        body: &dyn TxBody,
        group: &[Delivery],
        payloads: Vec<Decoded>,
    ) -> Result<(), String> {
        let route = &group[0].route;
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .map_err(|e| format!("cannot begin a transaction: {e}"))?;
        if self.inner.ledger {
            let ids: Vec<&str> = group.iter().map(Delivery::ledger_id).collect();
            ledger::record_all(&mut tx, route.stream(), route.group(), &ids)
                .await
                .map_err(|e| {
                    format!("cannot write the ledger rows (one may be there already): {e}")
                })?;
        }
        let limit = route.timeout;
        let deadline = tokio::time::Instant::now() + limit;
        for (d, payload) in group.iter().zip(payloads) {
            let this = &mut tx;
            let failure = match run_handler(move || body.handle(this, payload), deadline).await {
                Ran::Ok => continue,
                Ran::Err(e) => e.to_string(),
                Ran::Panicked(m) => format!("the handler panicked: {m}"),
                Ran::TimedOut => timed_out(limit),
            };
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback after a failed handler failed");
            }
            return Err(format!("entry {}: {failure}", d.entry.id));
        }
        tx.commit()
            .await
            .map_err(|e| format!("cannot commit: {e}"))?;
        route.report.add(Event::Transaction, 1);
        Ok(())
    }

    /// Begin, ledger row, handler, commit — again in a new transaction,
    /// under the handler's retry policy, for what
    /// [`Db::retry`](safesync_core::Db::retry) retries (it runs the
    /// attempts: the same decision and back-off). The ledger row goes in
    /// the round trip of `BEGIN` where the backend allows
    /// ([`retry_recorded`](safesync_core::__private::ledger::retry_recorded)).
    async fn transaction(&self, body: &dyn TxBody, d: &Delivery, payload: Decoded) -> Outcome {
        let route = &*d.route;
        let h = &*route.handler;
        let (policy, limit) = (route.retry, route.timeout);
        let attempt = Attempt {
            body,
            d,
            limit,
            policy,
            deadline: std::sync::OnceLock::new(),
            first: std::sync::Mutex::new(Some(payload)),
            stage: std::sync::Mutex::new(Stage::Begin),
            attempts: AtomicU32::new(0),
        };
        let db = &self.inner.db;
        let result = if self.inner.ledger {
            let row = Row {
                stream: h.stream(),
                group: h.group(),
                id: d.ledger_id(),
            };
            retry_recorded(db, policy, row, |tx| Box::pin(attempt.run(tx)))
                .await
                .map(|ran| ran.unwrap_or(Outcome::Duplicate))
        } else {
            db.retry(policy, |tx| Box::pin(attempt.run(tx))).await
        };
        let Attempt {
            stage, attempts, ..
        } = attempt;
        let e = match result {
            Ok(outcome) => {
                route.report.add(Event::Transaction, 1);
                return outcome;
            }
            Err(e) => e,
        };
        let stage = stage
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(stage, Stage::TimedOut) {
            route.report.add(Event::TimedOut, 1);
            return handler_failed(timed_out(limit), Timed::Timeout);
        }
        let failure = worded(&e, stage, attempts.into_inner());
        // The handler's own error: a rejection goes on as one.
        if failure.handler
            && let Error::Rejected(reason) = e.root()
        {
            return Outcome::Rejected(reason.clone());
        }
        Outcome::Failed(failure)
    }
}

/// The state of one delivery's attempts, shared by them all.
struct Attempt<'a> {
    body: &'a dyn TxBody,
    d: &'a Delivery,
    limit: Duration,
    policy: safesync_core::RetryPolicy,
    /// Counts from the first handler run (after `BEGIN` and the ledger
    /// row, which keep the database's own timeouts: on SQLite `BEGIN`
    /// queues for the write lock) over every later attempt and back-off.
    deadline: std::sync::OnceLock<tokio::time::Instant>,
    /// The first attempt takes the payload decoded already; a retry
    /// decodes it again (the handler consumed the first).
    first: std::sync::Mutex<Option<Decoded>>,
    stage: std::sync::Mutex<Stage>,
    attempts: AtomicU32,
}

impl Attempt<'_> {
    fn set(&self, s: Stage) {
        if let Ok(mut g) = self.stage.lock() {
            *g = s;
        }
    }

    /// One attempt, in `tx` (its ledger row written already).
    async fn run(&self, tx: &mut Tx<'_>) -> Result<Outcome, Error> {
        {
            let (d, body, limit) = (self.d, self.body, self.limit);
            let route = &*d.route;
            if self.attempts.fetch_add(1, Ordering::Relaxed) > 0 {
                route.report.add(Event::Retried, 1);
            }
            if self
                .deadline
                .get()
                .is_some_and(|d| tokio::time::Instant::now() >= *d)
            {
                // The back-off of a retry ran past the deadline.
                self.set(Stage::TimedOut);
                return Err(Error::Config(timed_out(limit)));
            }
            let h = &*route.handler;
            let payload = match self.first.lock().ok().and_then(|mut p| p.take()) {
                Some(p) => p,
                None => decode(h, body, &d.entry).map_err(|reason| Error::Decode {
                    what: format!("entry {} again, for a retry", d.entry.id),
                    reason,
                })?,
            };
            self.set(Stage::Handler { retryable: false });
            let deadline = *self
                .deadline
                .get_or_init(|| tokio::time::Instant::now() + limit);
            // The handler's future is dropped at the deadline; the retry
            // loop then rolls the transaction back (an error it does not
            // retry) before another one begins.
            match run_handler(move || body.handle(tx, payload), deadline).await {
                Ran::Ok => {
                    self.set(Stage::Commit);
                    Ok(Outcome::Committed)
                }
                Ran::Err(e) => {
                    self.set(Stage::Handler {
                        retryable: self.policy.retries(&e),
                    });
                    Err(e)
                }
                Ran::Panicked(message) => {
                    self.set(Stage::Panicked(message.clone()));
                    // Not retryable: the loop returns it at once.
                    Err(Error::Config(message))
                }
                Ran::TimedOut => {
                    self.set(Stage::TimedOut);
                    Err(Error::Config(timed_out(limit)))
                }
            }
        }
    }
}

/// How far the last attempt of a delivery got, to word its failure.
enum Stage {
    /// `BEGIN` and the ledger row.
    Begin,
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

/// The failure of a delivery whose last error is `e`, from how far its
/// last attempt got (`stage`) and how many attempts ran (`ran`).
fn worded(e: &Error, mut stage: Stage, ran: u32) -> Failure {
    let db_failure = |what: &str| Failure {
        reason: format!("{what}: {e}"),
        handler: false,
        timed: Timed::Error,
    };
    // The error came from a `BEGIN` after the last attempt that ran: the
    // attempts `retry` counted outnumber those that ran, or the handler's
    // error was retried and the next `BEGIN` failed for good.
    let begin_failed = match e {
        Error::RetriesExhausted { attempts, .. } => *attempts > ran,
        _ => matches!(stage, Stage::Handler { retryable: true }),
    };
    if begin_failed {
        stage = Stage::Begin;
    }
    let failed = |reason: String, timed: Timed| Failure {
        reason,
        handler: true,
        timed,
    };
    match stage {
        Stage::Begin => db_failure("cannot begin a transaction"),
        Stage::Commit => db_failure("cannot commit"),
        Stage::Handler { .. } => failed(e.to_string(), Timed::Error),
        Stage::TimedOut => failed(e.to_string(), Timed::Timeout),
        Stage::Panicked(message) => {
            failed(format!("the handler panicked: {message}"), Timed::Panic)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use safesync_core::Error;

    use super::{Ran, run_handler};

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn run_handler_tells_ok_errors_panics_and_timeouts_apart() {
        assert!(matches!(
            run_handler(|| async { Ok(()) }, soon()).await,
            Ran::Ok
        ));
        let err = run_handler(|| async { Err(Error::Config("no".to_owned())) }, soon()).await;
        assert!(
            matches!(err, Ran::Err(Error::Config(ref m)) if m == "no"),
            "{err:?}"
        );
        let panicked = run_handler(|| async { panic!("in the future") }, soon()).await;
        assert!(
            matches!(panicked, Ran::Panicked(ref m) if m == "in the future"),
            "{panicked:?}"
        );
        let start_panicked = run_handler(
            || -> std::future::Ready<safesync_core::Result<()>> { panic!("while starting") },
            soon(),
        )
        .await;
        assert!(
            matches!(start_panicked, Ran::Panicked(ref m) if m == "while starting"),
            "{start_panicked:?}"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let hung = run_handler(std::future::pending::<safesync_core::Result<()>>, deadline).await;
        assert!(matches!(hung, Ran::TimedOut), "{hung:?}");
    }
}
