//! W0 commit-floor: `UPDATE` the worker's own row, commit. Raw sqlx only:
//! the database's own cost of one transaction at this concurrency.

use std::time::Instant;

use crate::driver::{Tally, drive};
use crate::env::{BeginWrite as _, BoxError, Env, on_pool};
use crate::workloads::{Checks, Outcome, Spec, int};

pub(crate) async fn run(env: &Env, spec: &Spec) -> Result<Outcome, BoxError> {
    env.exec("CREATE TABLE bench_commit (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .await?;
    env.insert_rows(
        "bench_commit",
        "id, n",
        (0..spec.workers).map(|i| format!("({i}, 0)")),
    )
    .await?;
    let sql = env.sql("UPDATE bench_commit SET n = n + 1 WHERE id = ?");
    let measured = drive(spec.workers, spec.ops, spec.limit, |w, ops| {
        let pool = env.pool.clone();
        let sql = sql.clone();
        async move {
            ops.ready().await;
            let id = i64::try_from(w)?;
            let mut tally = Tally::default();
            on_pool!(&pool, |p| {
                while ops.claim().is_some() {
                    let started = Instant::now();
                    let mut tx = p.begin_write().await?;
                    let done = sqlx::query(&sql).bind(id).execute(&mut *tx).await?;
                    if done.rows_affected() != 1 {
                        return Err(format!("row {id} is missing").into());
                    }
                    tx.commit().await?;
                    tally.record(started, 0);
                }
            });
            Ok(tally)
        }
    })
    .await?;
    let mut checks = Checks::default();
    let sum = env
        .int(&format!("SELECT {} FROM bench_commit", env.sum("n")))
        .await?;
    checks.eq("sum(n)", sum, int(measured.ops));
    Ok(Outcome { measured, checks })
}
