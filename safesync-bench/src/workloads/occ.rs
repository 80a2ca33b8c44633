//! W1 occ-increment: read an account (id, balance, version), add 1, write
//! it back only at the version read; on a conflict, retry in a new
//! transaction. Hot: one row; spread: 1,000 rows, picked at random.
//!
//! Both variants back off alike (the framework's default: full jitter from
//! 5 ms, doubling, at most 1 s) and give up after 1,000 attempts.

use std::time::Instant;

use safesync::prelude::*;

use crate::driver::{MAX_ATTEMPTS, Tally, backoff, drive};
use crate::env::{BeginWrite as _, BoxError, Env, is_transient, on_pool};
use crate::workloads::{Checks, Outcome, Spec, Variant, int};

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "bench_occ")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

const SPREAD_ROWS: u64 = 1_000;

/// The same account sequence per worker index in both variants.
fn rng_of(worker: usize) -> fastrand::Rng {
    fastrand::Rng::with_seed(0x5afe_0000 + worker as u64)
}

fn pick(rng: &mut fastrand::Rng, rows: u64) -> i64 {
    int(rng.u64(0..rows))
}

pub(crate) async fn run(
    env: &Env,
    variant: Variant,
    spec: &Spec,
    hot: bool,
) -> Result<Outcome, BoxError> {
    let rows = if hot { 1 } else { SPREAD_ROWS };
    env.exec(
        "CREATE TABLE bench_occ (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, \
         version BIGINT NOT NULL)",
    )
    .await?;
    env.insert_rows(
        "bench_occ",
        "id, balance, version",
        (0..rows).map(|i| format!("({i}, 0, 0)")),
    )
    .await?;
    let measured = match variant {
        Variant::Framework => framework(env, spec, rows).await?,
        _ => raw(env, spec, rows).await?,
    };
    let mut checks = Checks::default();
    let balances = env
        .int(&format!("SELECT {} FROM bench_occ", env.sum("balance")))
        .await?;
    let versions = env
        .int(&format!("SELECT {} FROM bench_occ", env.sum("version")))
        .await?;
    checks.eq("sum(balance)", balances, int(measured.ops));
    checks.eq("sum(version)", versions, int(measured.ops));
    if env.backend == crate::Backend::Sqlite {
        checks.note("raw begins with BEGIN IMMEDIATE, as safesync does");
    }
    Ok(Outcome { measured, checks })
}

async fn framework(env: &Env, spec: &Spec, rows: u64) -> Result<crate::driver::Measured, BoxError> {
    drive(spec.workers, spec.ops, spec.limit, |w, ops| {
        let db = env.db.clone();
        async move {
            ops.ready().await;
            let mut rng = rng_of(w);
            let policy = RetryPolicy::default().max_attempts(MAX_ATTEMPTS);
            let mut tally = Tally::default();
            while ops.claim().is_some() {
                let id = pick(&mut rng, rows);
                let started = Instant::now();
                let mut attempts = 0u64;
                db.retry(policy, |tx| {
                    attempts += 1;
                    Box::pin(async move {
                        let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
                        a.balance += 1;
                        a.update(tx).await
                    })
                })
                .await?;
                tally.record(started, attempts - 1);
            }
            Ok(tally)
        }
    })
    .await
}

async fn raw(env: &Env, spec: &Spec, rows: u64) -> Result<crate::driver::Measured, BoxError> {
    let select = env.sql("SELECT balance, version FROM bench_occ WHERE id = ?");
    let update = env.sql(
        "UPDATE bench_occ SET balance = ?, version = version + 1 WHERE id = ? AND version = ?",
    );
    drive(spec.workers, spec.ops, spec.limit, |w, ops| {
        let pool = env.pool.clone();
        let (select, update) = (select.clone(), update.clone());
        async move {
            ops.ready().await;
            let mut rng = rng_of(w);
            let mut jitter = fastrand::Rng::new();
            let mut tally = Tally::default();
            on_pool!(&pool, |p| {
                while ops.claim().is_some() {
                    let id = pick(&mut rng, rows);
                    let started = Instant::now();
                    let mut attempt = 0u32;
                    loop {
                        attempt += 1;
                        // One attempt: a new transaction that reads again.
                        let tried: Result<bool, sqlx::Error> = async {
                            let mut tx = p.begin_write().await?;
                            let (balance, version): (i64, i64) =
                                sqlx::query_as(&select).bind(id).fetch_one(&mut *tx).await?;
                            let n = sqlx::query(&update)
                                .bind(balance + 1)
                                .bind(id)
                                .bind(version)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                            if n == 1 {
                                tx.commit().await?;
                                Ok(true)
                            } else {
                                tx.rollback().await?;
                                Ok(false)
                            }
                        }
                        .await;
                        match tried {
                            Ok(true) => break,
                            Ok(false) => {}
                            Err(e) if is_transient(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                        if attempt >= MAX_ATTEMPTS {
                            return Err(format!("account {id}: {attempt} attempts").into());
                        }
                        tokio::time::sleep(backoff(attempt, &mut jitter)).await;
                    }
                    tally.record(started, u64::from(attempt - 1));
                }
            });
            Ok(tally)
        }
    })
    .await
}
