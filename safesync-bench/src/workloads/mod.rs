//! The workloads: what a case is, its variants, and one run of it.

use std::time::Duration;

use crate::driver::Measured;
use crate::env::{BoxError, Env};
use crate::report::RunResult;
use crate::{Backend, Config};

mod advisory;
mod commit;
mod idempotent;
mod occ;
mod outbox;
mod queue;
mod queue_raw;
mod rowlock;

/// One measured shape of a workload (W1 has hot and spread, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Commit,
    OccHot,
    OccSpread,
    LockHot,
    LockSpread,
    Advisory,
    AdvisoryUncontended,
    Idempotent,
    Queue,
    QueueOnly,
    Outbox,
}

/// Who does the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Hand-written sqlx (and redis) code.
    Raw,
    /// W0 with a ledger row inserted in the round trip of each `BEGIN`.
    RawLedger,
    /// W5 baseline 1: `XREADGROUP COUNT 1` → transaction → commit → `XACK`,
    /// one message at a time per worker.
    RawSimple,
    /// W5 baseline 2: batched reads, concurrent handlers, pipelined acks.
    RawTuned,
    /// safesync, as its documentation shows.
    Framework,
    /// W5: the safesync worker with its ledger off.
    FrameworkNoLedger,
    /// W5: the safesync worker with 16 messages per transaction
    /// (`Worker::messages_per_transaction(16)`).
    FrameworkBatched,
    /// W7: `Stream::send_in` in the producer's transaction, relayed by the
    /// consumer's `Worker` (`relay_outbox(true)`).
    FrameworkOutbox,
}

impl Variant {
    /// Every variant's name, for `--variant`.
    pub(crate) const NAMES: [&'static str; 8] = [
        "raw",
        "raw-ledger",
        "raw-simple",
        "raw-tuned",
        "framework",
        "framework-noledger",
        "framework-16-per-tx",
        "framework-outbox",
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::RawLedger => "raw-ledger",
            Variant::RawSimple => "raw-simple",
            Variant::RawTuned => "raw-tuned",
            Variant::Framework => "framework",
            Variant::FrameworkNoLedger => "framework-noledger",
            Variant::FrameworkBatched => "framework-16-per-tx",
            Variant::FrameworkOutbox => "framework-outbox",
        }
    }
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Commit => "w0-commit",
            Case::OccHot => "w1-hot",
            Case::OccSpread => "w1-spread",
            Case::LockHot => "w2-hot",
            Case::LockSpread => "w2-spread",
            Case::Advisory => "w3-advisory",
            Case::AdvisoryUncontended => "w3-uncontended",
            Case::Idempotent => "w4-idempotent",
            Case::Queue => "w5-queue",
            Case::QueueOnly => "w5q-queue-only",
            Case::Outbox => "w7-outbox",
        }
    }

    /// The variants, raw baselines first so the framework's ratio can be
    /// computed as soon as it finishes.
    pub(crate) fn variants(self) -> &'static [Variant] {
        match self {
            Case::Commit => &[Variant::Raw, Variant::RawLedger],
            Case::Queue => &[
                Variant::RawSimple,
                Variant::RawTuned,
                Variant::Framework,
                Variant::FrameworkNoLedger,
                Variant::FrameworkBatched,
            ],
            // W5q's handler takes no transaction: no ledger to turn off.
            Case::QueueOnly => &[Variant::RawTuned, Variant::Framework],
            Case::Outbox => &[Variant::Raw, Variant::Framework, Variant::FrameworkOutbox],
            _ => &[Variant::Raw, Variant::Framework],
        }
    }

    fn default_ops(self, quick: bool) -> u64 {
        match (self, quick) {
            (Case::OccHot | Case::AdvisoryUncontended, true) => 200,
            (Case::Advisory, true) => 300,
            (Case::Queue | Case::QueueOnly, true) => 800,
            (Case::Outbox, false) => 5_000,
            (_, true) => 400,
            (Case::Advisory, false) => 2_000,
            (Case::AdvisoryUncontended, false) => 1_000,
            (_, false) => 20_000,
        }
    }

    fn retries(self) -> bool {
        matches!(self, Case::OccHot | Case::OccSpread)
    }

    fn latency(self) -> bool {
        !matches!(self, Case::Queue | Case::QueueOnly)
    }
}

/// The size of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) workers: usize,
    pub(crate) ops: u64,
    pub(crate) limit: Option<Duration>,
}

/// What a run measured and whether its result held.
pub(crate) struct Outcome {
    pub(crate) measured: Measured,
    pub(crate) checks: Checks,
}

/// The verification of a run: each check adds a line to the detail.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    failed: bool,
    parts: Vec<String>,
}

impl Checks {
    /// `what` must equal `want`.
    pub(crate) fn eq(&mut self, what: &str, got: i64, want: i64) {
        if got == want {
            self.parts.push(format!("{what} = {got}"));
        } else {
            self.failed = true;
            self.parts.push(format!("{what} = {got}, expected {want}"));
        }
    }

    /// `cond` must hold; `what` says what it means.
    pub(crate) fn that(&mut self, what: &str, cond: bool) {
        if cond {
            self.parts.push(what.to_owned());
        } else {
            self.failed = true;
            self.parts.push(format!("NOT {what}"));
        }
    }

    /// A remark that is not a check.
    pub(crate) fn note(&mut self, what: impl Into<String>) {
        self.parts.push(what.into());
    }

    fn verified(&self) -> bool {
        !self.failed && !self.parts.is_empty()
    }

    fn detail(&self) -> String {
        self.parts.join("; ")
    }
}

/// `n` as an `i64` for comparisons with SQL results.
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn dispatch(
    env: &Env,
    case: Case,
    variant: Variant,
    spec: &Spec,
    redis: &Result<redis::Client, String>,
    quick: bool,
) -> Result<Outcome, BoxError> {
    env.warm(spec.workers).await?;
    match case {
        Case::Commit => commit::run(env, spec, variant == Variant::RawLedger).await,
        Case::OccHot | Case::OccSpread => occ::run(env, variant, spec, case == Case::OccHot).await,
        Case::LockHot | Case::LockSpread => {
            rowlock::run(env, variant, spec, case == Case::LockHot).await
        }
        Case::Advisory => advisory::run(env, variant, spec).await,
        Case::AdvisoryUncontended => advisory::run_uncontended(env, variant, spec).await,
        Case::Idempotent => idempotent::run(env, variant, spec).await,
        Case::Queue | Case::QueueOnly => {
            let redis = redis
                .as_ref()
                .map_err(|e| -> BoxError { e.clone().into() })?;
            queue::run(env, redis, variant, spec, case == Case::Queue).await
        }
        Case::Outbox => {
            let redis = redis
                .as_ref()
                .map_err(|e| -> BoxError { e.clone().into() })?;
            outbox::run(env, redis, variant, spec, quick).await
        }
    }
}

/// Runs one case in a namespace of its own and reports it.
pub(crate) async fn run_one(
    backend: Backend,
    case: Case,
    variant: Variant,
    workers: usize,
    config: &Config,
    redis: &Result<redis::Client, String>,
) -> RunResult {
    let target = config.ops.unwrap_or(case.default_ops(config.quick));
    let spec = Spec {
        workers,
        ops: target,
        limit: config.max_run_time,
    };
    let watch_rss = config.rss
        && matches!(case, Case::Queue | Case::QueueOnly)
        && matches!(
            variant,
            Variant::Framework | Variant::FrameworkNoLedger | Variant::FrameworkBatched
        );
    let checkpoint = crate::rss::Checkpoint::default();
    let outcome = async {
        let env = Env::create(backend).await?;
        let sampler = match redis {
            Ok(client) if watch_rss => Some(tokio::spawn(crate::rss::sample(
                client.clone(),
                queue::stream_of(&env),
                queue::GROUP,
                (target / 10).clamp(1, 100_000),
                checkpoint.clone(),
            ))),
            _ => None,
        };
        let result = dispatch(&env, case, variant, &spec, redis, config.quick).await;
        if let Some(s) = sampler {
            s.abort();
        }
        let cleaned = env.cleanup().await;
        let outcome = result?;
        cleaned.map_err(|e| format!("cleanup failed: {e}"))?;
        Ok::<_, BoxError>(outcome)
    }
    .await;
    let mut result = RunResult {
        workload: case.name().to_owned(),
        variant: variant.name().to_owned(),
        backend: backend.name().to_owned(),
        workers,
        ops: 0,
        target_ops: target,
        seconds: 0.0,
        ops_per_s: 0.0,
        retries_per_commit: None,
        client_cpu_us_per_op: None,
        p50_ms: None,
        p99_ms: None,
        verified: false,
        truncated: false,
        ratio_to_raw: None,
        ratio_to_raw_simple: None,
        ratio_to_w0: None,
        ratio_to_w0_ledger: None,
        peak_rss_mib_checkpoint: None,
        peak_rss_mib: watch_rss.then(crate::rss::peak_mib).flatten(),
        detail: String::new(),
    };
    if watch_rss {
        result.peak_rss_mib_checkpoint = checkpoint.lock().ok().and_then(|c| *c);
    }
    match outcome {
        Ok(Outcome {
            measured: m,
            checks,
        }) => {
            #[allow(clippy::cast_precision_loss)] // reason: counts far below 2^52
            let (ops, retries) = (m.ops as f64, m.retries as f64);
            result.ops = m.ops;
            result.seconds = m.seconds;
            result.ops_per_s = if m.seconds > 0.0 {
                ops / m.seconds
            } else {
                0.0
            };
            result.retries_per_commit = (case.retries() && m.ops > 0).then(|| retries / ops);
            if case.latency() {
                result.p50_ms = m.percentile_ms(50);
                result.p99_ms = m.percentile_ms(99);
            }
            result.truncated = m.truncated;
            result.client_cpu_us_per_op = m
                .cpu
                .filter(|_| m.ops > 0)
                .map(|cpu| cpu.as_secs_f64() * 1e6 / ops);
            result.verified = checks.verified() && m.ops > 0;
            result.detail = checks.detail();
        }
        Err(e) => result.detail = format!("run failed: {e}"),
    }
    result
}
