//! A singleton job guarded by a named lock. Start two copies at once: the
//! first runs the job, the second waits up to `--wait` seconds and then gives
//! up with a clear message.
//!
//! ```text
//! cargo run --example advisory_lock & cargo run --example advisory_lock
//! cargo run --example advisory_lock --features mysql -- --database-url mysql://safesync:safesync@127.0.0.1:3306/safesync
//! ```
//!
//! On SQLite (the default, a database file in the temp directory shared by
//! both copies) the lock is an OS file lock beside the database file; on
//! MySQL/MariaDB it is `GET_LOCK`, on PostgreSQL `pg_advisory_lock`.
//!
//! The job's result is written under the lock's fencing token: a copy that
//! lost its lock while working (and was followed by another) has its write
//! rejected with `Error::Fenced` instead of landing after its successor's.

use std::time::Duration;

use safesync::prelude::*;

const JOB: &str = "nightly-report";

struct Args {
    url: String,
    wait: Duration,
    work: Duration,
}

fn parse_args() -> Result<Args, String> {
    let default_url = format!(
        "sqlite:{}",
        std::env::temp_dir()
            .join("safesync-advisory-example.db")
            .display()
    );
    let mut args = Args {
        url: std::env::var("DATABASE_URL").unwrap_or(default_url),
        wait: Duration::from_secs(1),
        work: Duration::from_secs(3),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--database-url" => args.url = value,
            "--wait" => {
                args.wait = Duration::from_secs_f64(
                    value.parse().map_err(|e| format!("--wait {value}: {e}"))?,
                );
            }
            "--work" => {
                args.work = Duration::from_secs_f64(
                    value.parse().map_err(|e| format!("--work {value}: {e}"))?,
                );
            }
            _ => {
                return Err(format!(
                    "unknown flag `{flag}`; expected --database-url, --wait SECS, --work SECS"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Prints safesync's events; with the queue, a WARN per failed delivery
    // and an ERROR per dead letter.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let args = parse_args()?;
    let db = Db::connect(&args.url).await?;
    db.execute(
        "CREATE TABLE IF NOT EXISTS nightly_report (token BIGINT PRIMARY KEY, pid BIGINT NOT NULL)",
    )
    .await?;
    let me = std::process::id();
    match db.advisory_lock(JOB, args.wait).await {
        Ok(guard) => {
            println!("[{me}] holding `{JOB}`; working for {:?}", args.work);
            tokio::select! {
                () = tokio::time::sleep(args.work) => {
                    let token = guard.token();
                    let mut tx = db.begin().await?;
                    tx.execute_with(
                        "INSERT INTO nightly_report (token, pid) VALUES (?, ?)",
                        (i64::try_from(token)?, i64::from(me)),
                    )
                    .await?;
                    tx.fence(&guard).await?; // Err(Fenced): a later copy holds the lock; nothing lands
                    tx.commit().await?;
                    guard.release().await?;
                    println!("[{me}] job done under token {token}, lock released");
                }
                err = guard.lost() => {
                    println!("[{me}] stopping: {err}");
                }
            }
            Ok(())
        }
        Err(Error::LockTimeout { name, waited, .. }) => {
            println!("[{me}] another copy is running `{name}`; gave up after {waited:?}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
