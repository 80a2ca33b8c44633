//! W0 commit-floor: `UPDATE` the worker's own row, commit. Raw sqlx only:
//! the database's own cost of one transaction at this concurrency.
//!
//! Variant `raw-ledger`: the same transaction with one row more, written
//! in the round trip of its `BEGIN` (`BEGIN; INSERT INTO
//! safesync_queue_ledger …`, the ledger's own table and key): what one
//! transaction per message costs any consumer that records each message
//! in the database to apply it exactly once — W5's floor, without Redis
//! and without the framework.

use std::time::Instant;

use crate::Backend;
use crate::driver::{Tally, drive};
use crate::env::{BeginWrite as _, BoxError, Env, on_pool};
use crate::workloads::{Checks, Outcome, Spec, int};

/// The `BEGIN` of a `raw-ledger` transaction: the ledger row of operation
/// `op` rides in its round trip, keyed as W5's rows are (the run's stream
/// name, group `bench`, and an id shaped and ordered like Redis's,
/// `<ms>-<seq>`, so that rows land in the index where W5's do).
fn begin_with_ledger(backend: Backend, stream: &str, op: u64) -> String {
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::MySql | Backend::Postgres => "BEGIN",
    };
    let (ms, seq) = (1_764_633_600_000 + op / 8, op % 8);
    format!(
        "{begin}; INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) \
         VALUES ('{stream}', 'bench', '{ms}-{seq}')"
    )
}

/// W0; with `ledger`, each transaction also inserts a ledger row.
pub(crate) async fn run(env: &Env, spec: &Spec, ledger: bool) -> Result<Outcome, BoxError> {
    if ledger {
        safesync::queue::ensure_ledger(&env.db).await?;
    }
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
        let backend = env.backend;
        let stream = crate::workloads::queue::stream_of(env);
        async move {
            ops.ready().await;
            let id = i64::try_from(w)?;
            let mut tally = Tally::default();
            on_pool!(&pool, |p| {
                while let Some(op) = ops.claim() {
                    let started = Instant::now();
                    let mut tx = if ledger {
                        p.begin_with(begin_with_ledger(backend, &stream, op))
                            .await?
                    } else {
                        p.begin_write().await?
                    };
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
    if ledger {
        let rows = env
            .int("SELECT COUNT(*) FROM safesync_queue_ledger")
            .await?;
        checks.eq("ledger rows", rows, int(measured.ops));
    }
    Ok(Outcome { measured, checks })
}
