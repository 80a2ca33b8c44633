//! W3 advisory-lock: take the named lock `k{i % 16}`, increment that key's
//! counter row (a read, then a write: exclusion is what keeps it right),
//! commit, release. Also the uncontended acquire+release latency.
//!
//! Raw baselines: MySQL `GET_LOCK`/`RELEASE_LOCK` and PostgreSQL
//! `pg_advisory_lock`/`pg_advisory_unlock` on one dedicated connection per
//! worker, opened before the clock starts and kept for the run (safesync
//! keeps the dedicated connections of cleanly released locks for reuse,
//! `DbOptions::idle_lock_connections`, so it connects only for its first
//! locks). SQLite: an
//! OS file lock per name, polled the way safesync polls (1 ms doubling to
//! 50 ms), with the files opened once per worker.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use safesync::prelude::*;
use sqlx::Connection as _;

use crate::Backend;
use crate::driver::{Measured, Tally, drive};
use crate::env::{BeginWrite as _, BoxError, Env, RawPool, on_pool};
use crate::workloads::{Checks, Outcome, Spec, Variant, int};

#[derive(Debug, Clone, Locked)]
#[safesync(table = "bench_counter")]
struct Counter {
    #[safesync(key)]
    k: String,
    n: i64,
}

const KEYS: usize = 16;
/// How long one acquisition may wait; far more than any run needs.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Holders of each key right now, to catch two at once.
#[derive(Default)]
struct Holders {
    now: [AtomicU32; KEYS],
    overlaps: AtomicU64,
}

impl Holders {
    fn enter(&self, k: usize) {
        if self.now[k].fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn exit(&self, k: usize) {
        self.now[k].fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock_names(env: &Env) -> Vec<String> {
    (0..KEYS).map(|k| format!("{}:k{k}", env.id)).collect()
}

/// FNV-1a, 64 bits: the key a hand-written program derives from a name.
fn pg_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// One worker's raw named-lock session.
enum Locker {
    MySql(sqlx::MySqlConnection),
    Postgres(sqlx::PgConnection),
    /// One open lock file per name.
    File(Vec<File>),
}

/// What a worker needs to open its [`Locker`] inside its own task.
#[derive(Clone)]
enum LockerSpec {
    MySql(sqlx::mysql::MySqlConnectOptions),
    Postgres(sqlx::postgres::PgConnectOptions),
    Files(PathBuf),
}

impl LockerSpec {
    fn of(env: &Env) -> Result<LockerSpec, BoxError> {
        Ok(match &env.pool {
            RawPool::MySql(p) => LockerSpec::MySql((*p.connect_options()).clone()),
            RawPool::Postgres(p) => LockerSpec::Postgres((*p.connect_options()).clone()),
            RawPool::Sqlite(_) => {
                LockerSpec::Files(env.dir().ok_or("no run directory")?.to_path_buf())
            }
        })
    }
}

impl Locker {
    /// A dedicated connection (not from the pool), or the lock files.
    async fn open(spec: LockerSpec, names: &[String]) -> Result<Locker, BoxError> {
        Ok(match spec {
            LockerSpec::MySql(o) => Locker::MySql(sqlx::ConnectOptions::connect(&o).await?),
            LockerSpec::Postgres(o) => Locker::Postgres(sqlx::ConnectOptions::connect(&o).await?),
            LockerSpec::Files(dir) => {
                let mut files = Vec::with_capacity(names.len());
                for name in names {
                    let path = dir.join(format!("{}.lock", name.replace(':', "_")));
                    files.push(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .open(path)?,
                    );
                }
                Locker::File(files)
            }
        })
    }

    async fn lock(&mut self, index: usize, name: &str) -> Result<(), BoxError> {
        match self {
            Locker::MySql(c) => {
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
                    .bind(name)
                    .bind(LOCK_WAIT.as_secs())
                    .fetch_one(&mut *c)
                    .await?;
                if got != Some(1) {
                    return Err(format!("GET_LOCK({name}) = {got:?}").into());
                }
            }
            Locker::Postgres(c) => {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(pg_key(name))
                    .execute(&mut *c)
                    .await?;
            }
            Locker::File(files) => {
                let file = &files[index];
                let mut pause = Duration::from_millis(1);
                let deadline = Instant::now() + LOCK_WAIT;
                loop {
                    match file.try_lock() {
                        Ok(()) => break,
                        Err(std::fs::TryLockError::WouldBlock) => {}
                        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
                    }
                    if Instant::now() >= deadline {
                        return Err(format!("file lock {name}: timed out").into());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    async fn unlock(&mut self, index: usize, name: &str) -> Result<(), BoxError> {
        let held = match self {
            Locker::MySql(c) => {
                let r: Option<i64> = sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
                    .bind(name)
                    .fetch_one(&mut *c)
                    .await?;
                r == Some(1)
            }
            Locker::Postgres(c) => {
                sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                    .bind(pg_key(name))
                    .fetch_one(&mut *c)
                    .await?
            }
            Locker::File(files) => {
                files[index].unlock()?;
                true
            }
        };
        if held {
            Ok(())
        } else {
            Err(format!("lock {name} was not held at release").into())
        }
    }

    async fn close(self) -> Result<(), BoxError> {
        match self {
            Locker::MySql(c) => c.close().await?,
            Locker::Postgres(c) => c.close().await?,
            Locker::File(_) => {}
        }
        Ok(())
    }
}

fn note_mechanism(env: &Env, checks: &mut Checks) {
    checks.note(match env.backend {
        Backend::Sqlite => "raw: flock per name (file lock), as safesync on SQLite",
        Backend::MySql => "raw: GET_LOCK on one dedicated connection per worker",
        Backend::Postgres => "raw: pg_advisory_lock on one dedicated connection per worker",
    });
}

/// The contended workload: 16 names, counters behind them.
pub(crate) async fn run(env: &Env, variant: Variant, spec: &Spec) -> Result<Outcome, BoxError> {
    env.exec("CREATE TABLE bench_counter (k VARCHAR(32) PRIMARY KEY, n BIGINT NOT NULL)")
        .await?;
    env.insert_rows(
        "bench_counter",
        "k, n",
        (0..KEYS).map(|k| format!("('k{k}', 0)")),
    )
    .await?;
    let holders = Arc::new(Holders::default());
    let names = Arc::new(lock_names(env));
    let measured = match variant {
        Variant::Framework => framework(env, spec, &names, &holders).await?,
        _ => raw(env, spec, &names, &holders).await?,
    };
    let mut checks = Checks::default();
    let sum = env
        .int(&format!("SELECT {} FROM bench_counter", env.sum("n")))
        .await?;
    checks.eq("sum(n)", sum, int(measured.ops));
    checks.eq(
        "times two tasks held one name",
        int(holders.overlaps.load(Ordering::SeqCst)),
        0,
    );
    if variant != Variant::Framework {
        note_mechanism(env, &mut checks);
    }
    Ok(Outcome { measured, checks })
}

async fn framework(
    env: &Env,
    spec: &Spec,
    names: &Arc<Vec<String>>,
    holders: &Arc<Holders>,
) -> Result<Measured, BoxError> {
    drive(spec.workers, spec.ops, spec.limit, |_, ops| {
        let db = env.db.clone();
        let (names, holders) = (Arc::clone(names), Arc::clone(holders));
        async move {
            ops.ready().await;
            let mut tally = Tally::default();
            while let Some(i) = ops.claim() {
                let k = usize::try_from(i)? % KEYS;
                let started = Instant::now();
                let guard = db.advisory_lock(&names[k], LOCK_WAIT).await?;
                holders.enter(k);
                let key = format!("k{k}");
                let mut tx = db.begin().await?;
                let mut c = Counter::find(&mut tx, &key)
                    .await?
                    .ok_or_else(Error::not_found)?;
                c.n += 1;
                // The named lock excludes every other writer of this row:
                // the blind write by key is deliberate.
                c.overwrite(&mut tx).await?;
                tx.commit().await?;
                holders.exit(k);
                guard.release().await?;
                tally.record(started, 0);
            }
            Ok(tally)
        }
    })
    .await
}

async fn raw(
    env: &Env,
    spec: &Spec,
    names: &Arc<Vec<String>>,
    holders: &Arc<Holders>,
) -> Result<Measured, BoxError> {
    let select = env.sql("SELECT n FROM bench_counter WHERE k = ?");
    let update = env.sql("UPDATE bench_counter SET n = ? WHERE k = ?");
    let locker_spec = LockerSpec::of(env)?;
    drive(spec.workers, spec.ops, spec.limit, |_, ops| {
        let pool = env.pool.clone();
        let (names, holders) = (Arc::clone(names), Arc::clone(holders));
        let (select, update) = (select.clone(), update.clone());
        let locker_spec = locker_spec.clone();
        async move {
            let locker = Locker::open(locker_spec, &names).await;
            ops.ready().await;
            let mut locker = locker?;
            let mut tally = Tally::default();
            on_pool!(&pool, |p| {
                while let Some(i) = ops.claim() {
                    let k = usize::try_from(i)? % KEYS;
                    let started = Instant::now();
                    locker.lock(k, &names[k]).await?;
                    holders.enter(k);
                    let key = format!("k{k}");
                    let mut tx = p.begin_write().await?;
                    let n: i64 = sqlx::query_scalar(&select)
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                    sqlx::query(&update)
                        .bind(n + 1)
                        .bind(&key)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    holders.exit(k);
                    locker.unlock(k, &names[k]).await?;
                    tally.record(started, 0);
                }
            });
            locker.close().await?;
            Ok(tally)
        }
    })
    .await
}

/// Uncontended acquire+release: each worker its own name.
pub(crate) async fn run_uncontended(
    env: &Env,
    variant: Variant,
    spec: &Spec,
) -> Result<Outcome, BoxError> {
    let names: Arc<Vec<String>> = Arc::new(
        (0..spec.workers)
            .map(|w| format!("{}:solo{w}", env.id))
            .collect(),
    );
    let locker_spec = (variant != Variant::Framework)
        .then(|| LockerSpec::of(env))
        .transpose()?;
    let measured = drive(spec.workers, spec.ops, spec.limit, |w, ops| {
        let db = env.db.clone();
        let names = Arc::clone(&names);
        let locker_spec = locker_spec.clone();
        async move {
            let locker = match locker_spec {
                Some(spec) => Some(Locker::open(spec, &names).await),
                None => None,
            };
            ops.ready().await;
            let mut locker = locker.transpose()?;
            let name = &names[w];
            let mut tally = Tally::default();
            while ops.claim().is_some() {
                let started = Instant::now();
                match locker.as_mut() {
                    Some(l) => {
                        l.lock(w, name).await?;
                        l.unlock(w, name).await?;
                    }
                    None => db.advisory_lock(name, LOCK_WAIT).await?.release().await?,
                }
                tally.record(started, 0);
            }
            if let Some(l) = locker {
                l.close().await?;
            }
            Ok(tally)
        }
    })
    .await?;
    let mut checks = Checks::default();
    checks.that(
        "every acquire and release succeeded",
        measured.ops > 0 || spec.ops == 0,
    );
    if variant != Variant::Framework {
        note_mechanism(env, &mut checks);
    }
    Ok(Outcome { measured, checks })
}
