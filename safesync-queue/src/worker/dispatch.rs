//! The dispatch stage: the handler slots (one permit per running message
//! task), the entries being handled here, and the tasks themselves, which
//! a stop drains. The read stage holds a [`Dispatcher`]; each task hands
//! its deliveries to the run stage.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::delivery::Delivery;
use super::report::Event;
use super::route::Route;
use super::run::Runner;
use crate::handler::panic_message;

/// The key of an entry among those in flight: its route, and its id's two
/// numbers (`<ms>-<seq>`, what Redis always sends), so that tracking an
/// entry allocates nothing; any other text is hashed.
type InFlightKey = (usize, u64, u64);

fn in_flight_key(route: usize, id: &str) -> InFlightKey {
    let parsed = id
        .split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
    match parsed {
        Some((ms, seq)) if ms != u64::MAX => (route, ms, seq),
        _ => {
            use std::hash::{BuildHasher as _, RandomState};
            static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
            (
                route,
                u64::MAX,
                STATE.get_or_init(RandomState::new).hash_one(id),
            )
        }
    }
}

/// How long a message task of a plain handler may be kept busy by its
/// share of what was read when the handler is quick: a task costs a few
/// microseconds to start and schedule, so a quick handler's entries go in
/// shares of about this much work rather than one or two per task.
pub(crate) const TASK_BUDGET: Duration = Duration::from_micros(100);

/// How many new entries of a route one message task takes: a
/// transactional handler's share one transaction, up to `per_transaction`
/// per slot; a plain handler's read ahead of the free slots are shared out
/// among them (`read` entries over `free` slots), each task handling its
/// share in turn, as the slot would anyway, without a task per entry —
/// and when the handler is quick (`per_entry`, its mean time per entry
/// lately, well under [`TASK_BUDGET`]; see [`super::pace`]), in larger
/// shares of about that budget's work, so that fewer tasks carry the same
/// entries.
pub(crate) fn task_size(
    plain: bool,
    per_transaction: usize,
    read: usize,
    free: usize,
    per_entry: Option<Duration>,
) -> usize {
    if !plain {
        return per_transaction.max(1);
    }
    let fair = read.div_ceil(free.max(1)).max(1);
    let quick = per_entry.map_or(1, |t| {
        let t = t.as_nanos().max(1);
        usize::try_from(TASK_BUDGET.as_nanos() / t).unwrap_or(usize::MAX)
    });
    fair.max(quick.min(read))
}

/// How a message task ended.
enum Ended {
    Done,
    /// A bug of the worker's own: the panic.
    Panicked(Box<dyn std::any::Any + Send>),
    /// Cancelled at the drain deadline.
    Abandoned,
}

/// The narrow handle to the dispatch stage.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    /// One permit per running message task.
    slots: Arc<Semaphore>,
    /// Every entry being handled here.
    in_flight: Mutex<HashSet<InFlightKey>>,
    /// The message tasks, waited for at the end.
    tracker: TaskTracker,
    /// Cancelled at the drain deadline: running handlers are dropped.
    abort: CancellationToken,
    runner: Runner,
}

impl Dispatcher {
    pub(crate) fn new(concurrency: usize, runner: Runner) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(concurrency)),
                in_flight: Mutex::new(HashSet::new()),
                tracker: TaskTracker::new(),
                abort: CancellationToken::new(),
                runner,
            }),
        }
    }

    /// Waits until a slot is free, and says how many are; `None` on stop.
    pub(crate) async fn free_slots(&self, stop: &CancellationToken) -> Option<usize> {
        let slots = &self.inner.slots;
        let permit = tokio::select! {
            biased;
            p = slots.acquire() => p.ok()?,
            () = stop.cancelled() => return None,
        };
        let n = 1 + slots.available_permits();
        drop(permit);
        Some(n)
    }

    /// True when entry `id` of `route` is being handled here.
    pub(crate) fn is_in_flight(&self, route: &Route, id: &str) -> bool {
        let key = in_flight_key(route.index, id);
        self.inner
            .in_flight
            .lock()
            .is_ok_and(|set| set.contains(&key))
    }

    /// Starts new entries of one route, in tasks of [`task_size`]; those
    /// without a slot when `stop` comes stay pending.
    pub(crate) async fn new_entries(
        &self,
        deliveries: Vec<Delivery>,
        per_transaction: usize,
        stop: &CancellationToken,
    ) {
        let Some(first) = deliveries.first() else {
            return;
        };
        let plain = matches!(first.route.handler.body(), crate::handler::Body::Plain(_));
        let per_entry = if plain {
            self.inner.runner.per_entry(first.route.index)
        } else {
            None
        };
        let size = task_size(
            plain,
            per_transaction,
            deliveries.len(),
            self.inner.slots.available_permits(),
            per_entry,
        );
        let mut deliveries = deliveries.into_iter();
        loop {
            let group: Vec<Delivery> = deliveries.by_ref().take(size).collect();
            if group.is_empty() {
                break;
            }
            let Some(permit) = self.slot(stop).await else {
                break;
            };
            self.spawn(group, permit);
        }
    }

    /// Starts entries delivered again, each alone.
    pub(crate) async fn each(&self, deliveries: Vec<Delivery>, stop: &CancellationToken) {
        for d in deliveries {
            let Some(permit) = self.slot(stop).await else {
                break;
            };
            self.spawn(vec![d], permit);
        }
    }

    /// A slot for entries already read; `None` on stop (they stay pending).
    async fn slot(&self, stop: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            p = Arc::clone(&self.inner.slots).acquire_owned() => p.ok(),
            () = stop.cancelled() => None,
        }
    }

    /// Runs `group` in a task of its own holding `permit` until done;
    /// entries already being handled here are left out.
    fn spawn(&self, group: Vec<Delivery>, permit: OwnedSemaphorePermit) {
        let mut keys = Vec::with_capacity(group.len());
        let group: Vec<Delivery> = match self.inner.in_flight.lock() {
            Ok(mut set) => group
                .into_iter()
                .filter(|d| {
                    let key = in_flight_key(d.route.index, &d.entry.id);
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
        let live = group.iter().filter(|d| d.entry.fields.is_some()).count();
        first.route.report.add(Event::Read, live as u64);
        self.launch(group, keys, permit);
    }

    /// Runs `group`, admitted already (its in-flight `keys` marked), in a
    /// task holding `permit`. A plain handler's share that stops after a
    /// run that waited is shared out again ([`Dispatcher::share_out`]).
    fn launch(&self, group: Vec<Delivery>, keys: Vec<InFlightKey>, permit: OwnedSemaphorePermit) {
        let Some(first) = group.first() else { return };
        let route = Arc::clone(&first.route);
        let span = tracing::info_span!(
            "safesync.queue.message",
            stream = route.stream(),
            group = route.group(),
            id = %first.entry.id,
            deliveries = first.deliveries,
            count = group.len(),
        );
        let me = self.clone();
        self.inner.tracker.spawn(
            async move {
                let _permit = permit;
                let inner = Arc::clone(&me.inner);
                let mut keys = keys;
                let work = async {
                    let mut group = group;
                    loop {
                        let rest = inner.runner.run(group).await;
                        if rest.is_empty() {
                            break;
                        }
                        group = me.share_out(rest, &mut keys);
                    }
                };
                let run = AssertUnwindSafe(work).catch_unwind();
                let ended = tokio::select! {
                    done = run => match done {
                        Ok(()) => Ended::Done,
                        Err(panic) => Ended::Panicked(panic),
                    },
                    () = inner.abort.cancelled() => Ended::Abandoned,
                };
                // This task's entries: those it did not share out.
                let n = keys.len() as u64;
                match ended {
                    Ended::Done => {}
                    Ended::Abandoned => {
                        route.report.add(Event::Abandoned, n);
                        tracing::warn!("handlers cancelled at the drain deadline; the entries stay pending");
                    }
                    Ended::Panicked(panic) => {
                        // A bug of the worker's own: the entries stay
                        // pending and are delivered again (their in-flight
                        // marks go below).
                        route.report.add(Event::Failed, n);
                        tracing::error!(
                            panic = %panic_message(&*panic),
                            "a message task panicked; its entries stay pending and are delivered again"
                        );
                    }
                }
                if let Ok(mut set) = inner.in_flight.lock() {
                    for key in &keys {
                        set.remove(key);
                    }
                }
            }
            .instrument(span),
        );
    }

    /// A plain handler's run waited while `rest` of its share were still
    /// to run: the free slots take fair shares of them at once, in tasks of
    /// their own (their in-flight marks go with them out of `keys`); this
    /// task keeps the first share and returns it.
    fn share_out(&self, mut rest: Vec<Delivery>, keys: &mut Vec<InFlightKey>) -> Vec<Delivery> {
        let free = self.inner.slots.available_permits();
        let size = task_size(true, 1, rest.len(), free + 1, None);
        while rest.len() > size {
            let Ok(permit) = Arc::clone(&self.inner.slots).try_acquire_owned() else {
                break;
            };
            let share = rest.split_off(rest.len() - size);
            let moved: Vec<InFlightKey> = share
                .iter()
                .map(|d| in_flight_key(d.route.index, &d.entry.id))
                .collect();
            keys.retain(|k| !moved.contains(k));
            self.launch(share, moved, permit);
        }
        rest
    }

    /// Step 4 and 5 of the stop: waits for running tasks up to `timeout`,
    /// then cancels the rest (they roll back and stay pending).
    pub(crate) async fn drain(&self, timeout: Duration) {
        let tracker = &self.inner.tracker;
        tracker.close();
        if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
            tracing::warn!(
                running = tracker.len(),
                "drain deadline passed: cancelling running handlers"
            );
            self.inner.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{in_flight_key, task_size};

    const US: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_transactional_handler_takes_a_transaction_per_task() {
        assert_eq!(task_size(false, 16, 100, 4, None), 16);
        assert_eq!(task_size(false, 1, 100, 4, None), 1);
        assert_eq!(task_size(false, 1, 100, 4, Some(US)), 1);
    }

    #[test]
    fn a_plain_handler_shares_what_was_read_among_the_free_slots() {
        assert_eq!(task_size(true, 16, 64, 1, None), 64);
        assert_eq!(task_size(true, 16, 64, 8, None), 8);
        assert_eq!(task_size(true, 16, 9, 8, None), 2);
        assert_eq!(task_size(true, 1, 3, 8, None), 1);
        assert_eq!(
            task_size(true, 1, 3, 0, None),
            3,
            "no free slot counted: one task"
        );
    }

    #[test]
    fn a_quick_plain_handler_gets_shares_of_about_the_task_budget() {
        // 1 µs an entry: 100 per task, at most what was read.
        assert_eq!(task_size(true, 1, 64, 32, Some(US)), 64);
        // 10 µs: 10 per task, not 2.
        assert_eq!(task_size(true, 1, 64, 32, Some(10 * US)), 10);
        // As slow as the budget or slower: the fair share.
        assert_eq!(task_size(true, 1, 64, 32, Some(100 * US)), 2);
        assert_eq!(task_size(true, 1, 64, 32, Some(5 * MS)), 2);
        assert_eq!(task_size(true, 1, 64, 8, Some(5 * MS)), 8);
        assert_eq!(task_size(true, 1, 64, 32, Some(Duration::ZERO)), 64);
    }

    #[test]
    fn in_flight_keys_tell_routes_and_ids_apart() {
        assert_eq!(in_flight_key(0, "5-1"), (0, 5, 1));
        assert_ne!(in_flight_key(0, "5-1"), in_flight_key(1, "5-1"));
        assert_ne!(in_flight_key(0, "x"), in_flight_key(0, "y"));
        assert_eq!(in_flight_key(0, "x"), in_flight_key(0, "x"));
    }
}
