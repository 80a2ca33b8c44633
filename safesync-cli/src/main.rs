//! `safesync`, the operations CLI of [safesync](https://docs.rs/safesync):
//! queue health and pending entries, dead letters (list, show, replay,
//! purge), ledger pruning, and the named locks held right now.
//!
//! ```text
//! cargo install --path safesync-cli
//! safesync queue health --stream orders
//! safesync dlq list --stream orders --group billing --json
//! safesync locks --db postgres://postgres@127.0.0.1/test --name nightly-report
//! ```
//!
//! URLs come from flags or the library's environment variables:
//! `--redis-url` / `SAFESYNC_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! or for a Redis Cluster `--redis-cluster` / `SAFESYNC_REDIS_CLUSTER`
//! (seed URLs, comma-separated; it takes the place of the single URL),
//! `--db` / `DATABASE_URL`. Passwords never appear in the output.
//!
//! Exit codes: 0 success, 1 an error (printed on stderr as `error: …`),
//! 2 a usage error (bad or missing arguments).

mod args;
mod db;
mod output;
mod queue;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, Command, DlqCommand, QueueCommand};
use crate::output::Secrets;

/// What a command prints: a table for people, JSON for scripts.
pub(crate) struct Output {
    pub(crate) human: String,
    pub(crate) json: serde_json::Value,
}

/// Exit code of a command that failed.
const EXIT_ERROR: u8 = 1;

fn main() -> ExitCode {
    // clap prints usage errors and exits with 2, `--help` with 0.
    let cli = Cli::parse();
    let secrets = secrets(&cli.command);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(run(&cli.command));
    match result {
        Ok(out) => {
            let text = if cli.json {
                let mut s = serde_json::to_string_pretty(&out.json).unwrap_or_default();
                s.push('\n');
                s
            } else {
                out.human
            };
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = stdout.write_all(secrets.redact(&text).as_bytes());
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", secrets.redact(&e.to_string()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(command: &Command) -> safesync_core::Result<Output> {
    match command {
        Command::Queue(cmd) => queue::queue(cmd).await,
        Command::Dlq(cmd) => queue::dlq(cmd).await,
        Command::Ledger(cmd) => db::ledger(cmd).await,
        Command::Locks(args) => db::locks(args).await,
    }
}

/// The passwords of every URL the command uses.
fn secrets(command: &Command) -> Secrets {
    let mut s = Secrets::default();
    match command {
        Command::Queue(QueueCommand::Health { redis, .. }) => {
            redis.urls().for_each(|u| s.add_url(u));
        }
        Command::Queue(QueueCommand::Pending { at, .. })
        | Command::Dlq(
            DlqCommand::List { at }
            | DlqCommand::Show { at, .. }
            | DlqCommand::Replay { at, .. }
            | DlqCommand::Purge { at },
        ) => at.redis.urls().for_each(|u| s.add_url(u)),
        Command::Ledger(args::LedgerCommand::Prune { db, .. }) => s.add_url(&db.url),
        Command::Locks(args) => s.add_url(&args.db.url),
    }
    s
}
