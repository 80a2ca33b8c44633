//! W4 idempotent-insert: N inserts, one transaction each, of which half
//! repeat an earlier key (operation `i` inserts key `i mod ⌈N/2⌉`).
//!
//! Raw: `INSERT … ON CONFLICT (k) DO NOTHING` on SQLite and PostgreSQL; on
//! MySQL a plain `INSERT` whose error 1062 is taken as the duplicate.
//! Never `INSERT IGNORE`, which would swallow other errors too.

use std::time::Instant;

use safesync::prelude::*;

use crate::Backend;
use crate::driver::{Measured, Tally, drive};
use crate::env::{BeginWrite as _, BoxError, Env, is_duplicate, on_pool};
use crate::workloads::{Checks, Outcome, Spec, Variant, int};

#[derive(Debug, Clone, Locked)]
#[safesync(table = "bench_kv")]
struct Item {
    #[safesync(key)]
    k: i64,
    v: String,
}

/// Counts kept in [`Tally::counts`].
const INSERTED: usize = 0;
const DUPLICATES: usize = 1;

pub(crate) async fn run(env: &Env, variant: Variant, spec: &Spec) -> Result<Outcome, BoxError> {
    env.exec("CREATE TABLE bench_kv (k BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL)")
        .await?;
    let distinct = spec.ops.div_ceil(2);
    let measured = match variant {
        Variant::Framework => framework(env, spec, distinct).await?,
        _ => raw(env, spec, distinct).await?,
    };
    // Operations 0..ops ran (claims are handed out in order and every
    // claimed one finishes), so their distinct keys are known.
    let want = measured.ops.min(distinct);
    let mut checks = Checks::default();
    let rows = env.int("SELECT COUNT(*) FROM bench_kv").await?;
    checks.eq("rows", rows, int(want));
    checks.eq("inserted", int(measured.counts[INSERTED]), int(want));
    checks.eq(
        "duplicates reported",
        int(measured.counts[DUPLICATES]),
        int(measured.ops - want),
    );
    Ok(Outcome { measured, checks })
}

async fn framework(env: &Env, spec: &Spec, distinct: u64) -> Result<Measured, BoxError> {
    drive(spec.workers, spec.ops, spec.limit, |_, ops| {
        let db = env.db.clone();
        async move {
            ops.ready().await;
            let mut tally = Tally::default();
            while let Some(i) = ops.claim() {
                let k = int(i % distinct);
                let started = Instant::now();
                let mut tx = db.begin().await?;
                let item = Item {
                    k,
                    v: format!("v{k}"),
                };
                let done = item.insert_idempotent(&mut tx).await?;
                tx.commit().await?;
                match done {
                    Inserted::Inserted => tally.counts[INSERTED] += 1,
                    Inserted::AlreadyExists => tally.counts[DUPLICATES] += 1,
                }
                tally.record(started, 0);
            }
            Ok(tally)
        }
    })
    .await
}

async fn raw(env: &Env, spec: &Spec, distinct: u64) -> Result<Measured, BoxError> {
    let mysql = env.backend == Backend::MySql;
    let insert = env.sql(if mysql {
        "INSERT INTO bench_kv (k, v) VALUES (?, ?)"
    } else {
        "INSERT INTO bench_kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING"
    });
    drive(spec.workers, spec.ops, spec.limit, |_, ops| {
        let pool = env.pool.clone();
        let insert = insert.clone();
        async move {
            ops.ready().await;
            let mut tally = Tally::default();
            on_pool!(&pool, |p| {
                while let Some(i) = ops.claim() {
                    let k = int(i % distinct);
                    let started = Instant::now();
                    let mut tx = p.begin_write().await?;
                    let done = sqlx::query(&insert)
                        .bind(k)
                        .bind(format!("v{k}"))
                        .execute(&mut *tx)
                        .await;
                    let inserted = match done {
                        Ok(r) => r.rows_affected() == 1,
                        Err(e) if mysql && is_duplicate(&e) => false,
                        Err(e) => return Err(e.into()),
                    };
                    tx.commit().await?;
                    tally.counts[if inserted { INSERTED } else { DUPLICATES }] += 1;
                    tally.record(started, 0);
                }
            });
            Ok(tally)
        }
    })
    .await
}
