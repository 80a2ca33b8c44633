//! The safesync benchmark: the standard workloads of `WORKLOADS.md`, each
//! run with the framework and with a raw baseline written by hand on plain
//! sqlx and redis, in the same process, on SQLite, MySQL/MariaDB and
//! PostgreSQL.
//!
//! ```text
//! cargo run --release -p safesync-bench -- --backend all --workload all --quick
//! cargo run --release -p safesync-bench -- --backend mysql --workload w1,w2 --workers 1,8
//! ```
//!
//! Every run prints one JSON line (workload, variant, backend, workers, ops,
//! seconds, ops/s, retries per commit, p50/p99 latency where it applies,
//! whether its result was verified, and the framework's ops/s divided by
//! the raw baseline's of the same process run), then a summary table.
//! A run whose verification fails is reported as failed, and the program
//! exits with status 1.
//!
//! Each run works in a namespace of its own — a fresh SQLite file, MySQL
//! database or PostgreSQL schema, and Redis stream keys carrying the run's
//! id — and removes it afterwards. The derives name their table at compile
//! time (`#[safesync(table = "bench_occ")]`), so the uniqueness of a run's
//! tables comes from its namespace.
//!
//! How the figures are made:
//!
//! - Framework and raw code share one sqlx pool per run (`Db::from_*_pool`),
//!   sized as `Db::connect` sizes it (4 on SQLite, 10 on a server), opened
//!   before the clock starts. Workers are tasks of one multi-threaded tokio
//!   runtime.
//! - Raw SQLite writers begin with `BEGIN IMMEDIATE`, as safesync's do: a
//!   deferred transaction that reads first cannot become a writer once
//!   another has committed, so plain `BEGIN` would fail or lose updates.
//! - W1's raw retry loop backs off like `RetryPolicy::default()` (full
//!   jitter from 5 ms, doubling to 1 s); both give up after 1,000 attempts.
//! - `client_cpu_us_per_op` is this process's CPU time (all threads, 10 ms
//!   ticks) per operation: the client's cost, which drifts much less than
//!   database latencies on a shared machine. On SQLite it includes the
//!   database engine, which runs in the process.
//! - `--repeat R` runs each variant R times in alternating order; ratios
//!   then divide by the mean of the raw runs, and a table of medians
//!   follows. Single runs on a shared machine drift by 10–30 %.
//!
//! The crate is a library with a thin `main`, so tests can call [`run`]:
//!
//! ```no_run
//! # async fn demo() {
//! use safesync_bench::{Backend, Config, Workload};
//!
//! let config = Config {
//!     quick: true,
//!     backends: vec![Backend::Sqlite],
//!     workloads: Workload::ALL.iter().copied().filter(|w| !w.is_queue()).collect(),
//!     ..Config::default()
//! };
//! let results = safesync_bench::run(&config).await;
//! assert!(results.iter().all(|r| r.verified));
//! # }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod cli;
mod cpu;
mod driver;
mod env;
mod report;
mod rss;
mod workloads;

pub use report::{RunResult, summary_table};
use workloads::Case;

/// A database backend the benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite in a temporary file (WAL, `BEGIN IMMEDIATE` for writers).
    Sqlite,
    /// MariaDB (measured: 10.11) or MySQL at `SAFESYNC_MYSQL_URL`.
    MySql,
    /// PostgreSQL (measured: 15) at `SAFESYNC_PG_URL`.
    Postgres,
}

impl Backend {
    /// Every backend, in the order runs use.
    pub const ALL: [Backend; 3] = [Backend::Sqlite, Backend::MySql, Backend::Postgres];

    /// `sqlite`, `mysql` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(Backend::Sqlite),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "pg" => Ok(Backend::Postgres),
            other => Err(format!(
                "unknown backend `{other}`; expected sqlite, mysql, postgres or all"
            )),
        }
    }
}

/// A workload of `WORKLOADS.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// W0 commit-floor: one `UPDATE` of the worker's own row per
    /// transaction, raw sqlx only.
    W0,
    /// W1 occ-increment, hot (1 row) and spread (1,000 rows): versioned
    /// read-modify-write with retries in a new transaction.
    W1,
    /// W2 row-lock-increment, hot and spread: `SELECT … FOR UPDATE`, add
    /// one, update, commit.
    W2,
    /// W3 advisory-lock: named lock `k{i % 16}` around a counter
    /// increment; plus uncontended acquire+release latency.
    W3,
    /// W4 idempotent-insert: half the inserts are duplicates of earlier
    /// keys.
    W4,
    /// W5 queue-consume: Redis stream → transaction marking the order
    /// processed → commit → ack.
    W5,
    /// W5q queue-only: W5 with a handler that does no database work.
    W5q,
    /// W7 outbox: producer transactions (an `UPDATE` and a message) per
    /// second with the message sent after the commit or written to the
    /// outbox in the transaction, and the latency from commit to handler.
    Outbox,
}

impl Workload {
    /// Every workload, in the order runs use.
    pub const ALL: [Workload; 8] = [
        Workload::W0,
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W5q,
        Workload::Outbox,
    ];

    /// `w0` … `w5q`, `outbox`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::W0 => "w0",
            Workload::W1 => "w1",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W4 => "w4",
            Workload::W5 => "w5",
            Workload::W5q => "w5q",
            Workload::Outbox => "outbox",
        }
    }

    /// True for the workloads that need Redis (W5, W5q, outbox).
    pub fn is_queue(self) -> bool {
        matches!(self, Workload::W5 | Workload::W5q | Workload::Outbox)
    }

    fn cases(self) -> &'static [Case] {
        match self {
            Workload::W0 => &[Case::Commit],
            Workload::W1 => &[Case::OccHot, Case::OccSpread],
            Workload::W2 => &[Case::LockHot, Case::LockSpread],
            Workload::W3 => &[Case::Advisory, Case::AdvisoryUncontended],
            Workload::W4 => &[Case::Idempotent],
            Workload::W5 => &[Case::Queue],
            Workload::W5q => &[Case::QueueOnly],
            Workload::Outbox => &[Case::Outbox],
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown workload `{s}`; expected w0, w1, w2, w3, w4, w5, w5q, outbox or all"
                )
            })
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The backends, in order.
    pub backends: Vec<Backend>,
    /// The workloads, in order.
    pub workloads: Vec<Workload>,
    /// Worker counts (tasks in this process); every workload runs once per
    /// count.
    pub workers: Vec<usize>,
    /// Operations (W0–W4) or messages (W5, W5q) per run, overriding the
    /// defaults.
    pub ops: Option<u64>,
    /// Small counts: every workload on every backend within two minutes.
    pub quick: bool,
    /// Longest time one W0–W4 run keeps starting operations; it then
    /// finishes the ones in flight and verifies what it did (the JSON line
    /// says `"truncated": true`). `None`: no limit.
    pub max_run_time: Option<Duration>,
    /// Rounds per workload, backend and worker count: every variant runs
    /// this many times, in alternating order, and ratios divide by the mean
    /// of the raw rounds.
    pub repeat: usize,
    /// Print one JSON line per run on stdout (after each group of variants
    /// finishes).
    pub print: bool,
    /// Only these variants (`raw`, `raw-ledger`, `raw-simple`, `raw-tuned`, `framework`,
    /// `framework-noledger`, `framework-16-per-tx`); all when empty.
    pub variants: Vec<String>,
    /// W5/W5q framework runs: report the process's peak resident memory
    /// after `min(100,000, M/10)` messages and at the end (reset when the
    /// worker starts), to show memory that grows with the message count.
    pub rss: bool,
}

impl Default for Config {
    /// Every backend and workload, workers 1 and 8, the default counts
    /// (W1/W2 N = 20,000, W5 M = 20,000), at most 60 s per W0–W4 run, one
    /// round, printing.
    fn default() -> Self {
        Config {
            backends: Backend::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
            workers: vec![1, 8],
            ops: None,
            quick: false,
            max_run_time: Some(Duration::from_secs(60)),
            repeat: 1,
            print: true,
            rss: false,
            variants: Vec::new(),
        }
    }
}

impl Config {
    /// Parses the command line (without the program name): `--backend`,
    /// `--workload`, `--workers`, `--ops`, `--quick`, `--max-seconds`,
    /// `--repeat`.
    /// `Err` carries the message to show, [`USAGE`] for `--help`.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
        cli::parse(args)
    }
}

/// The command line's help text.
pub const USAGE: &str = cli::USAGE;

/// Runs every workload of `config` on every backend, raw baselines first
/// (in every other round last), and returns one result per run. Failures
/// (a server that is down, an operation that errs, a verification that does
/// not hold) are results with `verified: false` and the reason in
/// `detail`, never a panic.
pub async fn run(config: &Config) -> Vec<RunResult> {
    let redis = env::redis_client();
    let mut results = Vec::new();
    for &backend in &config.backends {
        for &workload in &config.workloads {
            for &case in workload.cases() {
                for &workers in &config.workers {
                    let mut group: Vec<RunResult> = Vec::new();
                    for round in 0..config.repeat.max(1) {
                        // Alternate the order, so drift on the machine does
                        // not always favour the same variant.
                        let mut order: Vec<_> = case
                            .variants()
                            .iter()
                            .copied()
                            .filter(|v| {
                                config.variants.is_empty()
                                    || config.variants.iter().any(|n| n == v.name())
                            })
                            .collect();
                        if round % 2 == 1 {
                            order.reverse();
                        }
                        for variant in order {
                            group.push(
                                workloads::run_one(backend, case, variant, workers, config, &redis)
                                    .await,
                            );
                        }
                    }
                    let raw: Vec<RunResult> = group
                        .iter()
                        .filter(|r| !r.variant.starts_with("framework"))
                        .cloned()
                        .collect();
                    for result in &mut group {
                        report::add_ratios(result, &raw);
                        report::add_w0_ratio(result, &results);
                        if config.print {
                            println!("{}", result.to_json());
                        }
                    }
                    results.extend(group);
                }
            }
        }
    }
    results
}
