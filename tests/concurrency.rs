//! Many tasks hammering ONE row must end with the exact expected sum, on
//! every backend; the same load without protection shows lost updates, so
//! the check is able to fail.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::sqlx;

const TASKS: i64 = 16;
const INCREMENTS: i64 = 500;

#[derive(Debug, Clone, Versioned, Locked)]
#[safesync(table = "hot")]
struct Hot {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

async fn setup(backend: Backend) -> TestDb {
    let t = TestDb::with_pool_size(backend, 20).await;
    t.exec("CREATE TABLE hot (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, version BIGINT NOT NULL)")
        .await;
    let mut tx = t.db.begin().await.unwrap();
    Hot {
        id: 1,
        balance: 0,
        version: 0,
    }
    .insert(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    t
}

async fn final_row(db: &Db) -> Hot {
    let mut tx = db.begin().await.unwrap();
    let h = Hot::find(&mut tx, &1).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    h
}

async fn hammer<F, Fut>(db: &Db, op: F) -> Duration
where
    F: Fn(Db) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (db, op) = (db.clone(), op.clone());
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    op(db.clone()).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    start.elapsed()
}

async fn hot_row_increments_are_never_lost_with_versioned_retry(backend: Backend) {
    let t = setup(backend).await;
    let policy = RetryPolicy::default()
        .max_attempts(100_000)
        .max_elapsed(Duration::from_secs(600))
        .base_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(20));
    let took = hammer(&t.db, move |db| async move {
        db.retry(policy, |tx| {
            Box::pin(async move {
                let mut h = Hot::find(tx, &1).await?.ok_or_else(Error::not_found)?;
                h.balance += 1;
                h.update(tx).await
            })
        })
        .await
    })
    .await;
    let h = final_row(&t.db).await;
    eprintln!(
        "{backend:?}: {} versioned increments in {took:?}",
        TASKS * INCREMENTS
    );
    assert_eq!(h.balance, TASKS * INCREMENTS);
    assert_eq!(
        h.version,
        TASKS * INCREMENTS,
        "one version per committed increment"
    );
    t.cleanup().await;
}

async fn hot_row_increments_are_never_lost_with_row_locks(backend: Backend) {
    let t = setup(backend).await;
    let took = hammer(&t.db, |db| async move {
        let mut tx = db.begin().await?;
        let mut h = Hot::lock(&mut tx, &1).await?.ok_or_else(Error::not_found)?;
        h.balance += 1;
        h.update(&mut tx).await?;
        tx.commit().await
    })
    .await;
    let h = final_row(&t.db).await;
    eprintln!(
        "{backend:?}: {} locked increments in {took:?}",
        TASKS * INCREMENTS
    );
    assert_eq!(h.balance, TASKS * INCREMENTS);
    t.cleanup().await;
}

/// Read, yield, write back with no version and no lock: the classic lost
/// update. Each statement runs on its own (autocommit), as naive code does.
async fn naive_read_modify_write_loses_updates(backend: Backend) {
    let t = setup(backend).await;
    hammer(&t.db, move |db| async move {
        macro_rules! naive {
            ($pool:expr) => {{
                let pool = $pool;
                let (balance,): (i64,) = sqlx::query_as("SELECT balance FROM hot WHERE id = 1")
                    .fetch_one(pool)
                    .await?;
                tokio::task::yield_now().await;
                let update = if backend == Backend::Postgres {
                    "UPDATE hot SET balance = $1 WHERE id = 1"
                } else {
                    "UPDATE hot SET balance = ? WHERE id = 1"
                };
                sqlx::query(update).bind(balance + 1).execute(pool).await?;
            }};
        }
        match backend {
            Backend::Sqlite => naive!(db.as_sqlite().unwrap()),
            Backend::MySql => naive!(db.as_mysql().unwrap()),
            Backend::Postgres => naive!(db.as_postgres().unwrap()),
        }
        Ok(())
    })
    .await;
    let h = final_row(&t.db).await;
    eprintln!(
        "{backend:?}: naive read-modify-write kept {} of {}",
        h.balance,
        TASKS * INCREMENTS
    );
    assert!(
        h.balance < TASKS * INCREMENTS,
        "without a version check or a lock, concurrent increments are lost"
    );
    t.cleanup().await;
}

/// A record with no version column: the only checked write is through the
/// row lock.
#[derive(Debug, Locked)]
#[safesync(table = "tally")]
struct Tally {
    #[safesync(key)]
    id: i64,
    n: i64,
}

const UNVERSIONED_TASKS: i64 = 8;
const UNVERSIONED_INCREMENTS: i64 = 50;

async fn setup_tally(backend: Backend) -> TestDb {
    let t = TestDb::with_pool_size(backend, 12).await;
    t.exec("CREATE TABLE tally (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .await;
    let mut tx = t.db.begin().await.unwrap();
    Tally { id: 1, n: 0 }.insert(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    t
}

/// `UNVERSIONED_TASKS` tasks each run `op` `UNVERSIONED_INCREMENTS` times;
/// returns the final count.
async fn hammer_tally<F, Fut>(db: &Db, op: F) -> i64
where
    F: Fn(Db) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let tasks: Vec<_> = (0..UNVERSIONED_TASKS)
        .map(|_| {
            let (db, op) = (db.clone(), op.clone());
            tokio::spawn(async move {
                for _ in 0..UNVERSIONED_INCREMENTS {
                    op(db.clone()).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    let n = Tally::find(&mut tx, &1).await.unwrap().unwrap().n;
    tx.commit().await.unwrap();
    n
}

/// `lock` → `Held::update` on a record without a version: exact.
async fn unversioned_increments_through_the_held_row_are_never_lost(backend: Backend) {
    let t = setup_tally(backend).await;
    let n = hammer_tally(&t.db, |db| async move {
        let mut tx = db.begin().await?;
        let mut c = Tally::lock(&mut tx, &1)
            .await?
            .ok_or_else(Error::not_found)?;
        tokio::task::yield_now().await;
        c.n += 1;
        c.update(&mut tx).await?;
        tx.commit().await
    })
    .await;
    assert_eq!(n, UNVERSIONED_TASKS * UNVERSIONED_INCREMENTS);
    t.cleanup().await;
}

/// The control: `find` → `overwrite` (the blind write that `update` on a
/// plain unversioned value used to be) in a transaction loses updates on
/// the servers, so the test above can fail.
async fn unversioned_find_then_overwrite_loses_updates(backend: Backend) {
    let t = setup_tally(backend).await;
    let n = hammer_tally(&t.db, |db| async move {
        let mut tx = db.begin().await?;
        let mut c = Tally::find(&mut tx, &1)
            .await?
            .ok_or_else(Error::not_found)?;
        tokio::task::yield_now().await;
        c.n += 1;
        c.overwrite(&mut tx).await?;
        tx.commit().await
    })
    .await;
    eprintln!(
        "{backend:?}: find → overwrite kept {n} of {}",
        UNVERSIONED_TASKS * UNVERSIONED_INCREMENTS
    );
    assert!(n < UNVERSIONED_TASKS * UNVERSIONED_INCREMENTS);
    t.cleanup().await;
}

on_every_backend!(
    hot_row_increments_are_never_lost_with_versioned_retry,
    hot_row_increments_are_never_lost_with_row_locks,
    naive_read_modify_write_loses_updates,
    unversioned_increments_through_the_held_row_are_never_lost,
);

on_servers!(unversioned_find_then_overwrite_loses_updates);
