//! `#[transactional]` on SQLite, MySQL/MariaDB and PostgreSQL: the wrapper
//! commits on `Ok`, rolls back on `Err` and panic, and under `retry` runs
//! every attempt in a new transaction with fresh arguments. Every wrapper is
//! called from inside `tokio::spawn`, so its future must be `Send`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::transactional;

#[derive(Debug, Clone, PartialEq, Versioned)]
#[safesync(table = "tx_accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    note: String,
    #[safesync(version)]
    version: i64,
}

const TX_ACCOUNTS: &str = "CREATE TABLE tx_accounts (id BIGINT PRIMARY KEY, \
     balance BIGINT NOT NULL, note VARCHAR(200) NOT NULL, version BIGINT NOT NULL)";

/// Fast back-off, so conflict tests do not sleep for long.
fn quick() -> RetryPolicy {
    RetryPolicy::default()
        .base_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

#[transactional]
async fn open(tx: &mut Tx<'_>, id: i64, balance: i64) -> Result<(), Error> {
    Account {
        id,
        balance,
        note: String::new(),
        version: 0,
    }
    .insert(tx)
    .await
}

/// Writes `balance`, then fails with `NotFound` when told to: the write must
/// not survive.
#[transactional]
async fn set_balance(
    tx: &mut Tx<'_>,
    id: i64,
    balance: i64,
    then_fail: bool,
) -> Result<i64, Error> {
    let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
    a.balance = balance;
    a.update(tx).await?;
    if then_fail {
        return Err(Error::not_found());
    }
    Ok(a.version)
}

/// Writes `balance`, then panics.
#[transactional]
async fn set_balance_and_panic(tx: &mut Tx<'_>, id: i64, balance: i64) -> Result<(), Error> {
    let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
    a.balance = balance;
    a.update(tx).await?;
    panic!("handler bug after writing {balance}");
}

/// Adds `amount` and appends `note` to the row's note. The first attempt
/// loses a race: someone else deposits 100 between our read and our write.
/// `note` is the caller's value in every attempt, though an attempt changes
/// its copy.
#[transactional(retry = quick())]
async fn deposit_losing_first_race(
    tx: &mut Tx<'_>,
    id: i64,
    amount: i64,
    mut note: String,
    other: &Db,
    attempts: &AtomicU32,
) -> Result<Account, Error> {
    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
    let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
    if attempt == 1 {
        if other.dialect() == safesync::Dialect::Sqlite {
            // Our transaction holds SQLite's write lock, so no one else can
            // write now: the lost race is simulated by a stale copy.
            a.version -= 1;
        } else {
            let mut o = other.begin().await?;
            let mut theirs = Account::find(&mut o, &id)
                .await?
                .ok_or_else(Error::not_found)?;
            theirs.balance += 100;
            theirs.update(&mut o).await?;
            o.commit().await?;
        }
    }
    note = format!("{note} (attempt {attempt})");
    a.note.push_str(&note);
    a.balance += amount;
    a.update(tx).await?;
    Ok(a)
}

/// Withdraws from an account that may not exist: `NotFound` is not
/// retryable.
#[transactional(retry)]
async fn withdraw(
    tx: &mut Tx<'_>,
    id: i64,
    amount: i64,
    attempts: &AtomicU32,
) -> Result<(), Error> {
    attempts.fetch_add(1, Ordering::SeqCst);
    let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
    a.balance -= amount;
    a.update(tx).await
}

/// Always writes a stale version: every attempt conflicts.
#[transactional(retry = quick().max_attempts(3))]
async fn always_stale(tx: &mut Tx<'_>, id: i64, attempts: &AtomicU32) -> Result<(), Error> {
    attempts.fetch_add(1, Ordering::SeqCst);
    let mut a = Account::find(tx, &id).await?.ok_or_else(Error::not_found)?;
    a.version += 7;
    a.update(tx).await
}

async fn setup(backend: Backend) -> TestDb {
    let t = TestDb::new(backend).await;
    t.exec(TX_ACCOUNTS).await;
    t
}

async fn read(db: &Db, id: i64) -> Option<Account> {
    let mut tx = db.begin().await.unwrap();
    let a = Account::find(&mut tx, &id).await.unwrap();
    tx.commit().await.unwrap();
    a
}

async fn ok_commits_err_and_panic_roll_back(backend: Backend) {
    let t = setup(backend).await;

    // Ok → committed.
    let db = t.db.clone();
    let version = tokio::spawn(async move {
        open(&db, 1, 50).await?;
        set_balance(&db, 1, 60, false).await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(version, 1);
    let a = read(&t.db, 1).await.unwrap();
    assert_eq!((a.balance, a.version), (60, 1));

    // Err → rolled back, and the error is returned as it is.
    let db = t.db.clone();
    let err = tokio::spawn(async move { set_balance(&db, 1, 70, true).await })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let a = read(&t.db, 1).await.unwrap();
    assert_eq!((a.balance, a.version), (60, 1));

    // An error of the database (a duplicate key) rolls back too.
    let db = t.db.clone();
    let err = tokio::spawn(async move { open(&db, 1, 0).await })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err:?}");
    assert_eq!(read(&t.db, 1).await.unwrap().balance, 60);

    // Panic → rolled back, and the row is not left locked.
    let db = t.db.clone();
    let joined = tokio::spawn(async move { set_balance_and_panic(&db, 1, 80).await }).await;
    assert!(joined.unwrap_err().is_panic());
    let db = t.db.clone();
    let after = tokio::time::timeout(Duration::from_secs(20), async move {
        tokio::spawn(async move { set_balance(&db, 1, 90, false).await })
            .await
            .unwrap()
    })
    .await
    .expect("the panicked transaction released its locks");
    assert_eq!(after.unwrap(), 2);
    let a = read(&t.db, 1).await.unwrap();
    assert_eq!((a.balance, a.version), (90, 2));
    t.cleanup().await;
}

async fn retry_reruns_a_version_conflict_in_a_new_transaction(backend: Backend) {
    let t = setup(backend).await;
    let other = t.other_db().await;
    let db = t.db.clone();
    let attempts = Arc::new(AtomicU32::new(0));
    let n = Arc::clone(&attempts);
    let written = tokio::spawn(async move {
        open(&db, 1, 0).await?;
        let note = String::from("deposit");
        deposit_losing_first_race(&db, 1, 5, note, &other, &n).await
    })
    .await
    .unwrap()
    .unwrap();

    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // The second attempt re-read the row, so the other deposit is kept
    // (SQLite: nobody else wrote), and its note started from the caller's
    // value, not from what the first attempt made of it.
    let expected_balance = if backend == Backend::Sqlite { 5 } else { 105 };
    let expected_version = if backend == Backend::Sqlite { 1 } else { 2 };
    assert_eq!(written.note, "deposit (attempt 2)");
    assert_eq!(
        (written.balance, written.version),
        (expected_balance, expected_version)
    );
    assert_eq!(read(&t.db, 1).await.unwrap(), written);
    t.cleanup().await;
}

async fn retry_stops_after_one_attempt_on_an_error_it_cannot_retry(backend: Backend) {
    let t = setup(backend).await;
    let db = t.db.clone();
    let attempts = Arc::new(AtomicU32::new(0));
    let n = Arc::clone(&attempts);
    let err = tokio::spawn(async move { withdraw(&db, 404, 10, &n).await })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);

    // Bounded: a conflict on every attempt gives up after the policy's
    // attempts, with the last conflict inside, and writes nothing.
    let db = t.db.clone();
    let attempts = Arc::new(AtomicU32::new(0));
    let n = Arc::clone(&attempts);
    let err = tokio::spawn(async move {
        open(&db, 1, 10).await?;
        always_stale(&db, 1, &n).await
    })
    .await
    .unwrap()
    .unwrap_err();
    match &err {
        Error::RetriesExhausted {
            attempts: 3, last, ..
        } => assert!(matches!(**last, Error::Conflict { .. }), "{last:?}"),
        other => panic!("expected RetriesExhausted after 3 attempts, got {other:?}"),
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let a = read(&t.db, 1).await.unwrap();
    assert_eq!((a.balance, a.version), (10, 0));
    t.cleanup().await;
}

on_every_backend!(
    ok_commits_err_and_panic_roll_back,
    retry_reruns_a_version_conflict_in_a_new_transaction,
    retry_stops_after_one_attempt_on_an_error_it_cannot_retry,
);
