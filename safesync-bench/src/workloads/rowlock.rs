//! W2 row-lock-increment: lock the row (`SELECT … FOR UPDATE`), add 1,
//! update, commit. Hot: one row; spread: 1,000 rows, picked at random.
//!
//! SQLite has no row locks: the raw code begins with `BEGIN IMMEDIATE`
//! (the database's write lock) and reads plainly, which is what safesync
//! does there too; without it the read-then-write would lose updates.

use std::time::Instant;

use safesync::prelude::*;

use crate::Backend;
use crate::driver::{Measured, Tally, drive};
use crate::env::{BeginWrite as _, BoxError, Env, on_pool};
use crate::workloads::{Checks, Outcome, Spec, Variant, int};

#[derive(Debug, Clone, Locked)]
#[safesync(table = "bench_rowlock")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
}

const SPREAD_ROWS: u64 = 1_000;

fn rng_of(worker: usize) -> fastrand::Rng {
    fastrand::Rng::with_seed(0x10c6_0000 + worker as u64)
}

pub(crate) async fn run(
    env: &Env,
    variant: Variant,
    spec: &Spec,
    hot: bool,
) -> Result<Outcome, BoxError> {
    let rows = if hot { 1 } else { SPREAD_ROWS };
    env.exec("CREATE TABLE bench_rowlock (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)")
        .await?;
    env.insert_rows(
        "bench_rowlock",
        "id, balance",
        (0..rows).map(|i| format!("({i}, 0)")),
    )
    .await?;
    let measured = match variant {
        Variant::Framework => framework(env, spec, rows).await?,
        _ => raw(env, spec, rows).await?,
    };
    let mut checks = Checks::default();
    let sum = env
        .int(&format!("SELECT {} FROM bench_rowlock", env.sum("balance")))
        .await?;
    checks.eq("sum(balance)", sum, int(measured.ops));
    if env.backend == Backend::Sqlite {
        checks.note("raw: BEGIN IMMEDIATE + plain SELECT (SQLite has no FOR UPDATE)");
    }
    Ok(Outcome { measured, checks })
}

async fn framework(env: &Env, spec: &Spec, rows: u64) -> Result<Measured, BoxError> {
    drive(spec.workers, spec.ops, spec.limit, |w, ops| {
        let db = env.db.clone();
        async move {
            ops.ready().await;
            let mut rng = rng_of(w);
            let mut tally = Tally::default();
            while ops.claim().is_some() {
                let id = int(rng.u64(0..rows));
                let started = Instant::now();
                let mut tx = db.begin().await?;
                let mut a = Account::lock(&mut tx, &id)
                    .await?
                    .ok_or_else(Error::not_found)?;
                a.balance += 1;
                a.update(&mut tx).await?;
                tx.commit().await?;
                tally.record(started, 0);
            }
            Ok(tally)
        }
    })
    .await
}

async fn raw(env: &Env, spec: &Spec, rows: u64) -> Result<Measured, BoxError> {
    let select = env.sql(if env.backend == Backend::Sqlite {
        "SELECT balance FROM bench_rowlock WHERE id = ?"
    } else {
        "SELECT balance FROM bench_rowlock WHERE id = ? FOR UPDATE"
    });
    let update = env.sql("UPDATE bench_rowlock SET balance = ? WHERE id = ?");
    drive(spec.workers, spec.ops, spec.limit, |w, ops| {
        let pool = env.pool.clone();
        let (select, update) = (select.clone(), update.clone());
        async move {
            ops.ready().await;
            let mut rng = rng_of(w);
            let mut tally = Tally::default();
            on_pool!(&pool, |p| {
                while ops.claim().is_some() {
                    let id = int(rng.u64(0..rows));
                    let started = Instant::now();
                    let mut tx = p.begin_write().await?;
                    let balance: i64 = sqlx::query_scalar(&select)
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let n = sqlx::query(&update)
                        .bind(balance + 1)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n != 1 {
                        return Err(format!("row {id} is missing").into());
                    }
                    tx.commit().await?;
                    tally.record(started, 0);
                }
            });
            Ok(tally)
        }
    })
    .await
}
