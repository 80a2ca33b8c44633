//! The settle stage: the one place that decides what becomes of a
//! delivery — acknowledged, left pending for a later delivery, or moved to
//! the dead letters — from its [`Outcome`] alone ([`decide`], a pure
//! function), then does it and reports it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::ack::Acks;
use super::delivery::{Delivery, Failure, Outcome};
use super::failure::{self, FailedDelivery, Hook};
use super::redeliver::Redeliveries;
use super::report::Event;
use crate::conn::SideConn;
use crate::dead_letter::{Burial, bury, cap_reason};
use crate::metrics::Outcome as Timed;

/// Most handler errors remembered for dead-letter reasons.
const MAX_REMEMBERED_ERRORS: usize = 10_000;

/// What becomes of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Done with: acknowledge it.
    Ack,
    /// Leave it pending: delivered again by this worker after a back-off
    /// growing with its delivery count (or, should it die, by any after
    /// `claim_idle`).
    Pending,
    /// Move it to the group's dead letters (and acknowledge it), with the
    /// reason.
    DeadLetter(String),
}

/// What becomes of a delivery that ended in `outcome` on its
/// `deliveries`-th delivery, with at most `max` allowed; `last_error` is
/// the failure of an earlier delivery seen here, if any.
///
/// Done (committed, or already in the ledger) and deleted entries are
/// acknowledged; a payload that cannot be decoded, or that the handler
/// rejected ([`Error::reject`](safesync_core::Error::reject)), goes to the
/// dead letters at once, since no delivery will do better; a handler's failure on the
/// last allowed delivery goes there too, and so does an entry delivered
/// more often than allowed; any other failure (the database's around the
/// handler included) leaves the entry pending.
pub(crate) fn decide(
    outcome: &Outcome,
    deliveries: u64,
    max: u64,
    last_error: Option<&str>,
) -> Decision {
    match outcome {
        Outcome::Committed | Outcome::Duplicate | Outcome::Trimmed => Decision::Ack,
        Outcome::Undecodable(reason) => Decision::DeadLetter(cap_reason(reason).into_owned()),
        Outcome::Rejected(reason) => Decision::DeadLetter(capped(&format!(
            "the handler rejected the entry on delivery {deliveries}: {}",
            cap_reason(reason)
        ))),
        Outcome::OverLimit => {
            let last = last_error.unwrap_or("not seen by this worker");
            Decision::DeadLetter(capped(&format!(
                "delivered {deliveries} times, more than max_deliveries {max}; last error: {last}"
            )))
        }
        Outcome::Failed(f) if f.handler && deliveries >= max => {
            Decision::DeadLetter(capped(&format!(
                "the handler failed on delivery {deliveries} of at most {max}: {}",
                cap_reason(&f.reason)
            )))
        }
        Outcome::Failed(_) => Decision::Pending,
    }
}

fn capped(reason: &str) -> String {
    cap_reason(reason).into_owned()
}

/// The narrow handle to the settle stage, shared by the message tasks.
#[derive(Clone)]
pub(crate) struct Settler {
    inner: Arc<Inner>,
}

struct Inner {
    side: Arc<SideConn>,
    consumer: String,
    max_deliveries: u64,
    acks: Acks,
    /// `Worker::on_failure`'s hook.
    on_failure: Option<Hook>,
    /// Where failed entries are scheduled for their next delivery.
    redeliveries: Arc<Redeliveries>,
    /// The last failure of entries left pending, by route and id, for the
    /// reason of their dead letter.
    last_errors: Mutex<HashMap<(usize, String), String>>,
}

impl Settler {
    pub(crate) fn new(
        side: Arc<SideConn>,
        consumer: String,
        max_deliveries: u64,
        acks: Acks,
        on_failure: Option<Hook>,
        redeliveries: Arc<Redeliveries>,
    ) -> Settler {
        Settler {
            inner: Arc::new(Inner {
                side,
                consumer,
                max_deliveries,
                acks,
                on_failure,
                redeliveries,
                last_errors: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The most deliveries of an entry: the run stage does not run one
    /// delivered more often.
    pub(crate) fn max_deliveries(&self) -> u64 {
        self.inner.max_deliveries
    }

    /// Decides on `d`, which ended in `outcome` after `latency` (the
    /// handler's time, when it ran), reports it, and acknowledges it,
    /// leaves it pending or moves it to the dead letters.
    pub(crate) async fn settle(&self, d: Delivery, outcome: Outcome, latency: Option<Duration>) {
        let inner = &*self.inner;
        let report = &d.route.report;
        let key = (d.route.index, d.entry.id.clone());
        let last = match outcome {
            Outcome::OverLimit => inner
                .last_errors
                .lock()
                .ok()
                .and_then(|e| e.get(&key).cloned()),
            _ => None,
        };
        let decision = decide(
            &outcome,
            d.deliveries,
            inner.max_deliveries,
            last.as_deref(),
        );
        let timed = match &outcome {
            Outcome::Committed => {
                report.add(Event::Processed, 1);
                Some(Timed::Ok)
            }
            Outcome::Duplicate => {
                report.add(Event::Duplicate, 1);
                tracing::info!(id = %d.entry.id, "already processed (ledger): acknowledging only");
                Some(Timed::Duplicate)
            }
            Outcome::Failed(Failure { timed, .. }) => {
                report.add(Event::Failed, 1);
                Some(*timed)
            }
            Outcome::Rejected(_) => {
                report.add(Event::Failed, 1);
                Some(Timed::Error)
            }
            Outcome::Trimmed => {
                report.add(Event::Trimmed, 1);
                tracing::info!(id = %d.entry.id, stream = d.route.stream(), "pending entry was deleted or trimmed: acknowledging it");
                None
            }
            Outcome::Undecodable(_) | Outcome::OverLimit => None,
        };
        if let (Some(timed), Some(latency)) = (timed, latency) {
            report.handled(timed, latency);
        }
        if let Outcome::Failed(Failure { reason, .. }) | Outcome::Rejected(reason) = &outcome {
            let dead = matches!(decision, Decision::DeadLetter(_));
            self.failed(&d, reason, dead).await;
        }
        match decision {
            Decision::Ack => {
                self.forget(&key);
                if matches!(outcome, Outcome::Trimmed) {
                    inner.acks.ack(&d.route, d.entry.id);
                } else {
                    inner.acks.ack_committed(&d.route, d.entry.id);
                }
            }
            Decision::Pending => {
                let Outcome::Failed(f) = outcome else { return };
                let wait =
                    inner
                        .redeliveries
                        .schedule(d.route.index, d.entry.id.clone(), d.deliveries);
                tracing::debug!(id = %d.entry.id, ?wait, "next delivery scheduled");
                let reason = cap_reason(&f.reason).into_owned();
                if let Ok(mut errors) = inner.last_errors.lock() {
                    // Bounded, should entries be taken over by other
                    // workers and never come back here.
                    if errors.len() >= MAX_REMEMBERED_ERRORS {
                        errors.clear();
                    }
                    errors.insert(key, reason);
                }
            }
            Decision::DeadLetter(reason) => {
                // Boxed: rare, and its state would enlarge every message task.
                Box::pin(self.dead_letter(&d, &reason)).await;
            }
        }
    }

    /// Makes a failed delivery seen: a WARN event, the last error of its
    /// stream and group in the summary and in Redis (for `health`), and
    /// the `on_failure` hook. `dead` when it goes to the dead letters.
    async fn failed(&self, d: &Delivery, reason: &str, dead: bool) {
        let inner = &*self.inner;
        let route = &d.route;
        let f = FailedDelivery {
            stream: route.stream().to_owned(),
            group: route.group().to_owned(),
            id: d.entry.id.clone(),
            delivery: d.deliveries,
            reason: cap_reason(reason).into_owned(),
            consumer: inner.consumer.clone(),
            dead_lettered: dead,
            at: SystemTime::now(),
        };
        tracing::warn!(
            stream = route.stream(),
            group = route.group(),
            id = %f.id,
            delivery = f.delivery,
            reason = %f.reason,
            then = if dead { "dead letter" } else { "stays pending" },
            "delivery failed"
        );
        route.report.last_error(&f);
        let op = format!("recording the last error of `{}`", route.stream());
        if let Err(e) = inner.side.query::<()>(&failure::record(&f), &op).await {
            tracing::warn!(error = %e, "cannot record the last error for `health`");
        }
        if let Some(hook) = &inner.on_failure {
            failure::call(hook, &f);
        }
    }

    fn forget(&self, key: &(usize, String)) {
        if let Ok(mut errors) = self.inner.last_errors.lock()
            && !errors.is_empty()
        {
            errors.remove(key);
        }
    }

    /// Moves the entry to its group's dead letters and acknowledges it,
    /// atomically. When Redis fails, the entry stays pending and is tried
    /// again later.
    async fn dead_letter(&self, d: &Delivery, reason: &str) {
        let inner = &*self.inner;
        let route = &d.route;
        let pipe = bury(
            &d.entry,
            &Burial {
                stream: route.stream(),
                key: &route.key,
                replayed: route.replayed,
                group: route.group(),
                consumer: &inner.consumer,
                deliveries: d.deliveries,
                reason,
            },
        );
        let op = format!("dead-lettering {} of `{}`", d.entry.id, route.stream());
        match inner.side.pipe::<(String, i64)>(&pipe, &op).await {
            Ok((dead_id, acked)) => {
                tracing::error!(
                    stream = route.stream(),
                    group = route.group(),
                    id = %d.entry.id,
                    dead_id = %dead_id,
                    deliveries = d.deliveries,
                    %reason,
                    "moved the entry to the dead letters"
                );
                route.report.add(Event::DeadLettered, 1);
                let event = if acked > 0 {
                    Event::Acked
                } else {
                    Event::AlreadyAcked
                };
                route.report.add(event, 1);
                self.forget(&(route.index, d.entry.id.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot move the entry to the dead letters; it stays pending");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Decision, decide};
    use crate::dead_letter::MAX_REASON;
    use crate::metrics::Outcome as Timed;
    use crate::worker::delivery::{Failure, Outcome};

    fn failed(handler: bool) -> Outcome {
        Outcome::Failed(Failure {
            reason: "boom".to_owned(),
            handler,
            timed: Timed::Error,
        })
    }

    #[test]
    fn done_and_deleted_entries_are_acknowledged() {
        for outcome in [Outcome::Committed, Outcome::Duplicate, Outcome::Trimmed] {
            assert_eq!(decide(&outcome, 1, 5, None), Decision::Ack);
            assert_eq!(
                decide(&outcome, 5, 5, None),
                Decision::Ack,
                "even on the last delivery"
            );
        }
    }

    #[test]
    fn a_handler_failure_stays_pending_until_the_last_delivery() {
        for n in 1..5 {
            assert_eq!(
                decide(&failed(true), n, 5, None),
                Decision::Pending,
                "delivery {n}"
            );
        }
        assert_eq!(
            decide(&failed(true), 5, 5, None),
            Decision::DeadLetter("the handler failed on delivery 5 of at most 5: boom".to_owned())
        );
        assert_eq!(
            decide(&failed(true), 1, 1, None),
            Decision::DeadLetter("the handler failed on delivery 1 of at most 1: boom".to_owned())
        );
    }

    #[test]
    fn a_database_failure_never_dead_letters() {
        assert_eq!(decide(&failed(false), 5, 5, None), Decision::Pending);
        assert_eq!(decide(&failed(false), 9, 5, None), Decision::Pending);
    }

    #[test]
    fn an_undecodable_payload_is_dead_lettered_at_once() {
        let outcome = Outcome::Undecodable("not JSON".to_owned());
        assert_eq!(
            decide(&outcome, 1, 5, None),
            Decision::DeadLetter("not JSON".to_owned())
        );
    }

    #[test]
    fn a_rejected_entry_is_dead_lettered_at_once() {
        let outcome = Outcome::Rejected("no lines".to_owned());
        assert_eq!(
            decide(&outcome, 1, 5, None),
            Decision::DeadLetter(
                "the handler rejected the entry on delivery 1: no lines".to_owned()
            )
        );
    }

    #[test]
    fn an_entry_over_the_limit_is_dead_lettered_with_its_last_error() {
        assert_eq!(
            decide(&Outcome::OverLimit, 6, 5, Some("boom")),
            Decision::DeadLetter(
                "delivered 6 times, more than max_deliveries 5; last error: boom".to_owned()
            )
        );
        assert_eq!(
            decide(&Outcome::OverLimit, 6, 5, None),
            Decision::DeadLetter(
                "delivered 6 times, more than max_deliveries 5; last error: not seen by this worker"
                    .to_owned()
            )
        );
    }

    #[test]
    fn reasons_are_capped() {
        let long = "x".repeat(10 * MAX_REASON);
        let outcome = Outcome::Failed(Failure {
            reason: long.clone(),
            handler: true,
            timed: Timed::Error,
        });
        for d in [
            decide(&outcome, 5, 5, None),
            decide(&Outcome::Undecodable(long.clone()), 1, 5, None),
            decide(&Outcome::OverLimit, 6, 5, Some(&long)),
        ] {
            let Decision::DeadLetter(reason) = d else {
                panic!("{d:?}")
            };
            assert!(reason.len() <= MAX_REASON, "{} bytes", reason.len());
        }
    }
}
