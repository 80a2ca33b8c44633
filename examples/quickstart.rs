//! Concurrent versioned increments on one hot row, verified at the end.
//!
//! Runs on embedded SQLite in a temporary file with no server:
//!
//! ```text
//! cargo run --example quickstart
//! cargo run --example quickstart --features mysql -- --database-url mysql://safesync:safesync@127.0.0.1:3306/safesync
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example quickstart --features postgres
//! ```

use std::time::Instant;

use safesync::prelude::*;

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "quickstart_accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    owner: String,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

const TASKS: i64 = 8;
const INCREMENTS: i64 = 100;

fn database_url() -> Result<(String, Option<tempfile::TempDir>), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if let Some(arg) = args.next() {
        let url = match arg.strip_prefix("--database-url=") {
            Some(url) => url.to_owned(),
            None if arg == "--database-url" => args.next().ok_or("--database-url needs a value")?,
            None => {
                return Err(
                    format!("unknown argument `{arg}`; expected --database-url URL").into(),
                );
            }
        };
        return Ok((url, None));
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok((url, None));
    }
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("quickstart.db").display());
    Ok((url, Some(dir)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Prints safesync's events; with the queue, a WARN per failed delivery
    // and an ERROR per dead letter.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let (url, _tempdir) = database_url()?;
    let db = Db::connect(&url).await?;
    println!("database: {:?}", db.dialect());

    db.execute("DROP TABLE IF EXISTS quickstart_accounts")
        .await?;
    // The table from the struct, in this backend's types; then the startup
    // check that the live table still matches it.
    db.create_table::<Account>().await?;
    db.check_table::<Account>().await?;
    let mut tx = db.begin().await?;
    let account = Account {
        id: 1,
        owner: "ada".into(),
        balance: 0,
        version: 0,
    };
    account.insert(&mut tx).await?;
    tx.commit().await?;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let policy = RetryPolicy::default().max_attempts(1000);
            for _ in 0..INCREMENTS {
                db.retry(policy, |tx| {
                    Box::pin(async move {
                        let mut a = Account::find(tx, &1).await?.ok_or_else(Error::not_found)?;
                        a.balance += 1;
                        a.update(tx).await
                    })
                })
                .await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }

    let mut tx = db.begin().await?;
    let a = Account::find(&mut tx, &1)
        .await?
        .ok_or_else(Error::not_found)?;
    tx.rollback().await?;
    let expected = TASKS * INCREMENTS;
    println!(
        "{TASKS} tasks x {INCREMENTS} versioned increments in {:.2?}: balance = {}, version = {}",
        started.elapsed(),
        a.balance,
        a.version
    );
    db.execute("DROP TABLE quickstart_accounts").await?;
    if a.balance == expected && a.version == expected {
        println!("verified: no update was lost (expected {expected})");
        Ok(())
    } else {
        Err(format!("LOST UPDATES: expected {expected}, found {}", a.balance).into())
    }
}
