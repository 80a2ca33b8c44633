//! Concurrent transfers between accounts under `retry`, rows locked in key
//! order so two opposite transfers cannot deadlock; the total is verified.
//!
//! ```text
//! cargo run --example transfer
//! cargo run --example transfer --features postgres -- --database-url postgres://postgres@127.0.0.1:5432/test
//! ```

use std::time::{Duration, Instant};

use safesync::prelude::*;

#[derive(Debug, Clone, Versioned, Locked)]
#[safesync(table = "transfer_accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

const ACCOUNTS: i64 = 4;
const START: i64 = 1_000;
const TASKS: u64 = 8;
const TRANSFERS: u64 = 50;

/// Moves `amount` from `from` to `to` in the transaction; both rows are
/// locked lowest key first, so opposite transfers never wait on each other
/// in a cycle.
async fn transfer(tx: &mut Tx<'_>, from: i64, to: i64, amount: i64) -> Result<bool, Error> {
    let (first, second) = if from < to { (from, to) } else { (to, from) };
    let mut a = Account::lock(tx, &first)
        .await?
        .ok_or_else(Error::not_found)?;
    let mut b = Account::lock(tx, &second)
        .await?
        .ok_or_else(Error::not_found)?;
    let (src, dst) = if from < to {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    if src.balance < amount {
        return Ok(false); // insufficient funds: nothing to write
    }
    src.balance -= amount;
    dst.balance += amount;
    a.update(tx).await?;
    b.update(tx).await?;
    Ok(true)
}

fn url_from_args() -> Result<Option<String>, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(std::env::var("DATABASE_URL").ok()),
        (Some("--database-url"), Some(url)) => Ok(Some(url)),
        (Some(other), _) => Err(format!(
            "unexpected argument `{other}`; usage: transfer [--database-url URL]"
        )),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Prints safesync's events; with the queue, a WARN per failed delivery
    // and an ERROR per dead letter.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let dir = tempfile::tempdir()?;
    let url = url_from_args()?
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("transfer.db").display()));
    let db = Db::connect(&url).await?;
    db.execute("DROP TABLE IF EXISTS transfer_accounts").await?;
    db.create_table::<Account>().await?;
    let mut tx = db.begin().await?;
    for id in 1..=ACCOUNTS {
        Account {
            id,
            balance: START,
            version: 0,
        }
        .insert(&mut tx)
        .await?;
    }
    tx.commit().await?;

    let started = Instant::now();
    let policy = RetryPolicy::default()
        .max_attempts(50)
        .max_delay(Duration::from_millis(50));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(task);
                let mut done = 0u64;
                for _ in 0..TRANSFERS {
                    let from = rng.i64(1..=ACCOUNTS);
                    let to = (from % ACCOUNTS) + 1;
                    let amount = rng.i64(1..=100);
                    let moved = db
                        .retry(policy, |tx| Box::pin(transfer(tx, from, to, amount)))
                        .await?;
                    done += u64::from(moved);
                }
                Ok::<_, Error>(done)
            })
        })
        .collect();
    let mut moved = 0;
    for t in tasks {
        moved += t.await??;
    }

    let mut tx = db.begin().await?;
    let mut total = 0;
    for id in 1..=ACCOUNTS {
        let a = Account::find(&mut tx, &id)
            .await?
            .ok_or_else(Error::not_found)?;
        println!(
            "account {id}: balance {:>5} (version {})",
            a.balance, a.version
        );
        total += a.balance;
    }
    tx.rollback().await?;
    db.execute("DROP TABLE transfer_accounts").await?;
    println!(
        "{moved} transfers in {:.2?} on {:?}",
        started.elapsed(),
        db.dialect()
    );
    if total == ACCOUNTS * START {
        println!("verified: total {total} unchanged");
        Ok(())
    } else {
        Err(format!(
            "MONEY CREATED OR LOST: total {total}, expected {}",
            ACCOUNTS * START
        )
        .into())
    }
}
