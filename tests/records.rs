//! Every record operation on SQLite, MySQL/MariaDB and PostgreSQL.

// Tests declare their records next to the scenario that uses them.
#![allow(
    clippy::items_after_statements,
    clippy::many_single_char_names,
    clippy::manual_assert
)]

mod common;

use common::{Backend, TestDb};
use safesync::prelude::*;

#[derive(Debug, Clone, PartialEq, Versioned, Locked)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    owner: String,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

/// Same table, but `owner` may be NULL on the Rust side: a NOT NULL probe.
#[derive(Debug, Clone, Versioned)]
#[safesync(table = "accounts")]
struct LooseAccount {
    #[safesync(key)]
    id: i64,
    owner: Option<String>,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

const ACCOUNTS: &str = "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
     balance BIGINT NOT NULL CHECK (balance >= 0), version BIGINT NOT NULL)";

fn acct(id: i64, balance: i64) -> Account {
    Account {
        id,
        owner: format!("owner{id}"),
        balance,
        version: 0,
    }
}

async fn setup(backend: Backend) -> TestDb {
    let t = TestDb::new(backend).await;
    t.exec(ACCOUNTS).await;
    t
}

async fn insert_all(db: &Db, rows: &[Account]) {
    let mut tx = db.begin().await.unwrap();
    for r in rows {
        r.insert(&mut tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn read(db: &Db, id: i64) -> Option<Account> {
    let mut tx = db.begin().await.unwrap();
    let a = Account::find(&mut tx, &id).await.unwrap();
    tx.commit().await.unwrap();
    a
}

async fn insert_find_update_delete_round_trip(backend: Backend) {
    let t = setup(backend).await;
    insert_all(&t.db, &[acct(1, 100)]).await;

    let mut tx = t.db.begin().await.unwrap();
    let mut a = Account::find(&mut tx, &1).await.unwrap().unwrap();
    assert_eq!(a, acct(1, 100));
    assert!(Account::find(&mut tx, &2).await.unwrap().is_none());
    a.balance = 150;
    a.owner = "renamed".into();
    a.update(&mut tx).await.unwrap();
    assert_eq!(a.version, 1, "update advances the struct's version");
    tx.commit().await.unwrap();

    let stored = read(&t.db, 1).await.unwrap();
    assert_eq!(
        (stored.balance, stored.owner.as_str(), stored.version),
        (150, "renamed", 1)
    );

    // An update that changes no value still succeeds and bumps the version
    // (MySQL reports matched rows, and the version always changes).
    let mut tx = t.db.begin().await.unwrap();
    let mut same = stored.clone();
    same.update(&mut tx).await.unwrap();
    same.update(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(read(&t.db, 1).await.unwrap().version, 3);

    let mut tx = t.db.begin().await.unwrap();
    same.delete(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(read(&t.db, 1).await.is_none());
    t.cleanup().await;
}

async fn stale_update_is_a_conflict_and_leaves_the_row_unchanged(backend: Backend) {
    let t = setup(backend).await;
    insert_all(&t.db, &[acct(7, 10)]).await;

    // We read version 0 ...
    let mut ours = read(&t.db, 7).await.unwrap();
    // ... someone else updates it meanwhile ...
    let mut tx = t.db.begin().await.unwrap();
    let mut theirs = Account::find(&mut tx, &7).await.unwrap().unwrap();
    theirs.balance = 20;
    theirs.update(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    // ... and our stale write must not win.
    ours.balance = 99;
    let mut tx = t.db.begin().await.unwrap();
    let err = ours.update(&mut tx).await.unwrap_err();
    match &err {
        Error::Conflict {
            table,
            key,
            expected,
            actual,
        } => {
            assert_eq!(
                (*table, key.as_str(), *expected, *actual),
                ("accounts", "7", 0, 1)
            );
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "version conflict on `accounts` key 7: expected version 0, the row is at version 1"
    );
    assert_eq!(
        ours.version, 0,
        "a failed update leaves the struct's version alone"
    );
    drop(tx);

    let stored = read(&t.db, 7).await.unwrap();
    assert_eq!((stored.balance, stored.version), (20, 1));

    // A stale delete is a conflict too, and deletes nothing.
    let mut tx = t.db.begin().await.unwrap();
    assert!(matches!(
        ours.delete(&mut tx).await,
        Err(Error::Conflict { .. })
    ));
    tx.commit().await.unwrap();
    assert!(read(&t.db, 7).await.is_some());
    t.cleanup().await;
}

async fn update_or_delete_of_a_missing_row_is_not_found(backend: Backend) {
    let t = setup(backend).await;
    let mut ghost = acct(404, 1);
    let mut tx = t.db.begin().await.unwrap();
    let err = ghost.update(&mut tx).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { table: Some("accounts"), key: Some(k) } if k == "404"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "no row in `accounts` with key 404");
    assert!(!err.is_retryable());
    assert!(matches!(
        ghost.delete(&mut tx).await,
        Err(Error::NotFound { .. })
    ));
    drop(tx);
    t.cleanup().await;
}

async fn plain_insert_of_a_duplicate_key_is_an_error(backend: Backend) {
    let t = setup(backend).await;
    insert_all(&t.db, &[acct(1, 5)]).await;
    let mut tx = t.db.begin().await.unwrap();
    let err = acct(1, 6).insert(&mut tx).await.unwrap_err();
    assert!(
        matches!(&err, Error::Duplicate { table: "accounts", key, .. } if key == "1"),
        "{err:?}"
    );
    drop(tx);
    assert_eq!(read(&t.db, 1).await.unwrap().balance, 5);
    t.cleanup().await;
}

async fn idempotent_insert_reports_already_exists_for_a_duplicate_key(backend: Backend) {
    let t = setup(backend).await;
    let mut tx = t.db.begin().await.unwrap();
    assert_eq!(
        acct(1, 5).insert_idempotent(&mut tx).await.unwrap(),
        Inserted::Inserted
    );
    assert_eq!(
        acct(1, 9).insert_idempotent(&mut tx).await.unwrap(),
        Inserted::AlreadyExists
    );
    // The transaction is still usable after the duplicate (Postgres included).
    assert_eq!(
        acct(2, 1).insert_idempotent(&mut tx).await.unwrap(),
        Inserted::Inserted
    );
    tx.commit().await.unwrap();
    assert_eq!(
        read(&t.db, 1).await.unwrap().balance,
        5,
        "the first insert won"
    );
    assert!(read(&t.db, 2).await.is_some());
    t.cleanup().await;
}

async fn idempotent_insert_still_fails_on_not_null_check_and_foreign_key(backend: Backend) {
    let t = setup(backend).await;
    t.exec("CREATE TABLE parents (id BIGINT PRIMARY KEY)").await;
    t.exec(
        "CREATE TABLE children (id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL, \
         email VARCHAR(64) NOT NULL UNIQUE, FOREIGN KEY (parent_id) REFERENCES parents (id))",
    )
    .await;

    #[derive(Debug, Locked)]
    #[safesync(table = "children")]
    struct Child {
        #[safesync(key)]
        id: i64,
        parent_id: i64,
        email: String,
    }

    // NOT NULL
    let mut tx = t.db.begin().await.unwrap();
    let loose = LooseAccount {
        id: 1,
        owner: None,
        balance: 0,
        version: 0,
    };
    let err = loose.insert_idempotent(&mut tx).await.unwrap_err();
    assert!(
        matches!(err, Error::Database(_)),
        "NOT NULL must not be swallowed: {err:?}"
    );
    drop(tx);

    // CHECK
    let mut tx = t.db.begin().await.unwrap();
    let err = acct(2, -1).insert_idempotent(&mut tx).await.unwrap_err();
    assert!(
        matches!(err, Error::Database(_)),
        "CHECK must not be swallowed: {err:?}"
    );
    drop(tx);

    // FOREIGN KEY
    let mut tx = t.db.begin().await.unwrap();
    let orphan = Child {
        id: 1,
        parent_id: 42,
        email: "a@x".into(),
    };
    let err = orphan.insert_idempotent(&mut tx).await.unwrap_err();
    assert!(
        matches!(err, Error::Database(_)),
        "FOREIGN KEY must not be swallowed: {err:?}"
    );
    drop(tx);

    // Another unique index than the key: still an error, not AlreadyExists.
    t.exec("INSERT INTO parents (id) VALUES (1)").await;
    let mut tx = t.db.begin().await.unwrap();
    let first = Child {
        id: 1,
        parent_id: 1,
        email: "same@x".into(),
    };
    assert_eq!(
        first.insert_idempotent(&mut tx).await.unwrap(),
        Inserted::Inserted
    );
    tx.commit().await.unwrap();
    let mut tx = t.db.begin().await.unwrap();
    let other_key_same_email = Child {
        id: 2,
        parent_id: 1,
        email: "same@x".into(),
    };
    let err = other_key_same_email
        .insert_idempotent(&mut tx)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Database(_)),
        "a unique email clash is not this key: {err:?}"
    );
    drop(tx);

    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=2 {
        assert!(LooseAccount::find(&mut tx, &id).await.unwrap().is_none());
    }
    assert!(Child::find(&mut tx, &2).await.unwrap().is_none());
    drop(tx);
    t.cleanup().await;
}

/// The record's key is a unique column, the primary key another: a clash
/// on the primary key is not this key, so it stays an error (MySQL names
/// `PRIMARY` in the message; safesync checks what the primary key is).
async fn idempotent_insert_on_a_key_that_is_not_the_primary_key(backend: Backend) {
    let t = setup(backend).await;
    t.exec("CREATE TABLE coupons (id BIGINT PRIMARY KEY, code VARCHAR(32) NOT NULL UNIQUE)")
        .await;

    #[derive(Debug, Locked)]
    #[safesync(table = "coupons")]
    struct Coupon {
        #[safesync(key)]
        code: String,
        id: i64,
    }
    let coupon = |code: &str, id| Coupon {
        code: code.into(),
        id,
    };

    let mut tx = t.db.begin().await.unwrap();
    assert_eq!(
        coupon("A", 1).insert_idempotent(&mut tx).await.unwrap(),
        Inserted::Inserted
    );
    tx.commit().await.unwrap();
    for _ in 0..2 {
        let mut tx = t.db.begin().await.unwrap();
        assert_eq!(
            coupon("A", 2).insert_idempotent(&mut tx).await.unwrap(),
            Inserted::AlreadyExists
        );
        drop(tx);
        let mut tx = t.db.begin().await.unwrap();
        let err = coupon("B", 1).insert_idempotent(&mut tx).await.unwrap_err();
        assert!(
            matches!(err, Error::Database(_)),
            "a primary-key clash on another column is not this key: {err:?}"
        );
        drop(tx);
    }
    let mut tx = t.db.begin().await.unwrap();
    assert!(
        Coupon::find(&mut tx, &"B".to_owned())
            .await
            .unwrap()
            .is_none()
    );
    drop(tx);
    t.cleanup().await;
}

/// A second transaction that locks the same row waits until the first
/// commits, then sees the first one's write. On the servers it waits in
/// `lock` (the row lock); on SQLite already in `begin` (the write lock).
async fn lock_returns_the_row_and_holds_it_until_commit(backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let t = setup(backend).await;
    insert_all(&t.db, &[acct(1, 1)]).await;
    let mut tx = t.db.begin().await.unwrap();
    let mut a = Account::lock(&mut tx, &1).await.unwrap().unwrap();
    assert!(Account::lock(&mut tx, &2).await.unwrap().is_none());

    let locked = Arc::new(AtomicBool::new(false));
    let second = tokio::spawn({
        let db = t.db.clone();
        let locked = Arc::clone(&locked);
        async move {
            let mut tx = db.begin().await.unwrap();
            let mut b = Account::lock(&mut tx, &1).await.unwrap().unwrap();
            locked.store(true, Ordering::SeqCst);
            let seen = b.clone();
            b.balance += 10;
            b.update(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            seen
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !locked.load(Ordering::SeqCst),
        "a second transaction locked the row while the first held it"
    );
    if backend != Backend::Sqlite {
        // Another connection cannot take it without waiting either.
        let mut other = t.other_db().await.begin().await.unwrap();
        let err = Account::lock_nowait(&mut other, &1).await.unwrap_err();
        assert!(matches!(err, Error::LockBusy { .. }), "{err:?}");
        other.rollback().await.unwrap();
    }

    a.balance += 1;
    a.update(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), second)
        .await
        .expect("the second transaction gets the row once the first commits")
        .unwrap();
    assert_eq!(
        (seen.balance, seen.version),
        (2, 1),
        "it saw the committed write"
    );
    assert_eq!(read(&t.db, 1).await.unwrap().balance, 12);
    t.cleanup().await;
}

/// Servers only: SQLite has no row locks — a second writer cannot even
/// begin while the first holds the write lock (see `Locked`'s docs and
/// `lock_returns_the_row_and_holds_it_until_commit`).
async fn lock_nowait_is_lock_busy_and_skip_locked_skips_while_another_holds_the_row(
    backend: Backend,
) {
    let t = setup(backend).await;
    insert_all(&t.db, &[acct(1, 1), acct(2, 2)]).await;

    let mut holder = t.db.begin().await.unwrap();
    Account::lock(&mut holder, &1).await.unwrap().unwrap();

    let mut other = t.db.begin().await.unwrap();
    let err = Account::lock_nowait(&mut other, &1).await.unwrap_err();
    assert!(
        matches!(&err, Error::LockBusy { table: "accounts", key } if key == "1"),
        "{err:?}"
    );
    // The transaction stays usable after LockBusy, on every backend.
    assert!(
        Account::lock_skip_locked(&mut other, &1)
            .await
            .unwrap()
            .is_none()
    );
    let free = Account::lock_skip_locked(&mut other, &2).await.unwrap();
    assert_eq!(free.map(|a| a.balance), Some(2));
    let mut two = Account::lock_nowait(&mut other, &2).await.unwrap().unwrap();
    two.balance = 3;
    two.update(&mut other).await.unwrap();
    other.commit().await.unwrap();

    holder.commit().await.unwrap();
    // Released: now it can be taken without waiting.
    let mut tx = t.db.begin().await.unwrap();
    assert!(Account::lock_nowait(&mut tx, &1).await.unwrap().is_some());
    tx.commit().await.unwrap();
    assert_eq!(read(&t.db, 2).await.unwrap().balance, 3);
    t.cleanup().await;
}

async fn composite_keys_renamed_columns_and_skipped_fields(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec(
        "CREATE TABLE memberships (org_id BIGINT NOT NULL, user_id BIGINT NOT NULL, \
         member_role VARCHAR(16) NOT NULL, rev INT NOT NULL, PRIMARY KEY (org_id, user_id))",
    )
    .await;

    #[derive(Debug, Clone, Versioned, Locked)]
    #[safesync(table = "memberships")]
    struct Membership {
        #[safesync(key)]
        org_id: i64,
        #[safesync(key)]
        user_id: i64,
        #[safesync(column = "member_role")]
        role: String,
        #[safesync(version, column = "rev")]
        revision: i32,
        #[safesync(skip)]
        cached: Option<String>,
    }

    let mut tx = t.db.begin().await.unwrap();
    let m = Membership {
        org_id: 1,
        user_id: 2,
        role: "admin".into(),
        revision: 0,
        cached: Some("x".into()),
    };
    m.insert(&mut tx).await.unwrap();
    assert_eq!(
        m.insert_idempotent(&mut tx).await.unwrap(),
        Inserted::AlreadyExists
    );
    let mut got = Membership::lock(&mut tx, &(1, 2)).await.unwrap().unwrap();
    assert_eq!(
        (got.role.as_str(), got.revision, got.cached.as_deref()),
        ("admin", 0, None)
    );
    assert!(Membership::find(&mut tx, &(2, 1)).await.unwrap().is_none());
    got.role = "owner".into();
    got.update(&mut tx).await.unwrap();
    assert_eq!(got.revision, 1);
    tx.commit().await.unwrap();

    let mut stale = m.clone();
    let mut tx = t.db.begin().await.unwrap();
    let err = stale.update(&mut tx).await.unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { table: "memberships", key, expected: 0, actual: 1 } if key == "(1, 2)"),
        "{err:?}"
    );
    drop(tx);
    // Held by a finished transaction: a versioned record is written in a
    // later one as a plain value, which its version check protects.
    let mut tx = t.db.begin().await.unwrap();
    got.into_inner().delete(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    t.cleanup().await;
}

async fn locked_only_records_write_through_the_held_row(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE counters (name VARCHAR(32) PRIMARY KEY, hits BIGINT NOT NULL)")
        .await;

    #[derive(Debug, Locked)]
    #[safesync(table = "counters")]
    struct Counter {
        #[safesync(key)]
        name: String,
        hits: i64,
    }
    let a = "a".to_owned();
    let hits = |db: Db| async move {
        let mut tx = db.begin().await.unwrap();
        let c = Counter::find(&mut tx, &"a".to_owned()).await.unwrap();
        drop(tx);
        c.map(|c| c.hits)
    };

    let mut tx = t.db.begin().await.unwrap();
    Counter {
        name: "a".into(),
        hits: 0,
    }
    .insert(&mut tx)
    .await
    .unwrap();
    let mut c = Counter::lock(&mut tx, &a).await.unwrap().unwrap();
    c.hits += 5;
    c.update(&mut tx).await.unwrap();
    let mut missing = Counter {
        name: "zz".into(),
        hits: 1,
    };
    assert!(matches!(
        missing.overwrite(&mut tx).await,
        Err(Error::NotFound { .. })
    ));
    tx.commit().await.unwrap();
    assert_eq!(hits(t.db.clone()).await, Some(5));

    // A held row written in another transaction: refused before any SQL.
    let mut tx = t.db.begin().await.unwrap();
    let mut stale = Counter::lock(&mut tx, &a).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    stale.hits = 99;
    let mut other = t.db.begin().await.unwrap();
    let err = stale.update(&mut other).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotHeld {
                table: "counters",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not locked by this transaction"));
    let err = stale.delete(&mut other).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err:?}");
    other.commit().await.unwrap();
    assert_eq!(
        hits(t.db.clone()).await,
        Some(5),
        "nothing of the stale row landed"
    );

    // The deliberate blind write by key.
    let mut tx = t.db.begin().await.unwrap();
    Counter {
        name: "a".into(),
        hits: 7,
    }
    .overwrite(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(hits(t.db.clone()).await, Some(7));

    let mut tx = t.db.begin().await.unwrap();
    let c = Counter::lock(&mut tx, &a).await.unwrap().unwrap();
    assert_eq!(c.hits, 7);
    c.delete(&mut tx).await.unwrap();
    assert!(Counter::find(&mut tx, &a).await.unwrap().is_none());
    tx.commit().await.unwrap();
    assert_eq!(hits(t.db.clone()).await, None);
    t.cleanup().await;
}

async fn transaction_commits_on_ok_and_rolls_back_on_err_and_panic(backend: Backend) {
    let t = setup(backend).await;
    insert_all(&t.db, &[acct(1, 0)]).await;
    let db = t.db.clone();

    // Ok → committed. Called from inside tokio::spawn: the API must be Send.
    let d = db.clone();
    tokio::spawn(async move {
        d.transaction(|tx| {
            Box::pin(async move {
                let mut a = Account::find(tx, &1).await?.ok_or_else(Error::not_found)?;
                a.balance = 10;
                a.update(tx).await
            })
        })
        .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(read(&db, 1).await.unwrap().balance, 10);

    // Err → rolled back.
    let d = db.clone();
    let res: Result<(), Error> = tokio::spawn(async move {
        d.transaction(|tx| {
            Box::pin(async move {
                let mut a = Account::find(tx, &1).await?.ok_or_else(Error::not_found)?;
                a.balance = 20;
                a.update(tx).await?;
                Err(Error::not_found())
            })
        })
        .await
    })
    .await
    .unwrap();
    assert!(matches!(res, Err(Error::NotFound { .. })));
    assert_eq!(read(&db, 1).await.unwrap().balance, 10);

    // Panic → rolled back, and the row is not left locked.
    let d = db.clone();
    let joined = tokio::spawn(async move {
        d.transaction(|tx| {
            Box::pin(async move {
                let mut a = Account::lock(tx, &1).await?.ok_or_else(Error::not_found)?;
                a.balance = 30;
                a.update(tx).await?;
                if a.balance == 30 {
                    panic!("handler bug");
                }
                Ok::<_, Error>(())
            })
        })
        .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    let d = db.clone();
    let after = tokio::time::timeout(std::time::Duration::from_secs(20), async move {
        let mut tx = d.begin().await.unwrap();
        let a = Account::lock(&mut tx, &1).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        a
    })
    .await
    .expect("the panicked transaction's lock was released");
    assert_eq!((after.balance, after.version), (10, 1));
    t.cleanup().await;
}

async fn retry_runs_a_new_transaction_per_attempt_and_stops_on_fatal_errors(backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    let t = setup(backend).await;
    insert_all(&t.db, &[acct(1, 0)]).await;
    let db = t.db.clone();

    // The first attempt loses a race (someone writes between our read and
    // our update); the second, in a new transaction, re-reads and wins.
    let attempts = Arc::new(AtomicU32::new(0));
    let (d, n) = (db.clone(), attempts.clone());
    let other = t.other_db().await;
    tokio::spawn(async move {
        d.retry(RetryPolicy::default(), |tx| {
            let n = n.clone();
            let other = other.clone();
            Box::pin(async move {
                let mut a = Account::find(tx, &1).await?.ok_or_else(Error::not_found)?;
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    // On SQLite our transaction holds the write lock, so the
                    // interfering write is simulated by editing our copy.
                    if other.dialect() == safesync::Dialect::Sqlite {
                        a.version -= 1;
                    } else {
                        let mut o = other.begin().await?;
                        let mut theirs = Account::find(&mut o, &1)
                            .await?
                            .ok_or_else(Error::not_found)?;
                        theirs.balance += 100;
                        theirs.update(&mut o).await?;
                        o.commit().await?;
                    }
                }
                a.balance += 1;
                a.update(tx).await
            })
        })
        .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let a = read(&db, 1).await.unwrap();
    let expected = if backend == Backend::Sqlite { 1 } else { 101 };
    assert_eq!(a.balance, expected);

    // A non-retryable error returns after exactly one attempt, as itself.
    let attempts = Arc::new(AtomicU32::new(0));
    let n = attempts.clone();
    let err = db
        .retry(RetryPolicy::default(), |tx| {
            let n = n.clone();
            Box::pin(async move {
                n.fetch_add(1, Ordering::SeqCst);
                Account::find(tx, &999)
                    .await?
                    .ok_or_else(Error::not_found)
                    .map(drop)
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);

    // Exhaustion reports the attempts and the last error.
    let err = db
        .retry(RetryPolicy::default().max_attempts(3), |tx| {
            Box::pin(async move {
                let mut a = Account::find(tx, &1).await?.ok_or_else(Error::not_found)?;
                a.version += 7; // always stale
                a.update(tx).await
            })
        })
        .await
        .unwrap_err();
    match &err {
        Error::RetriesExhausted {
            attempts: 3, last, ..
        } => {
            assert!(matches!(**last, Error::Conflict { .. }));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("gave up after 3 attempt(s)"),
        "{err}"
    );
    t.cleanup().await;
}

async fn bad_input_gives_errors_naming_what_was_wrong(backend: Backend) {
    let t = TestDb::new(backend).await;
    // Missing table: the database's error names it.
    let mut tx = t.db.begin().await.unwrap();
    let err = Account::find(&mut tx, &1).await.unwrap_err();
    assert!(matches!(err, Error::Database(_)), "{err:?}");
    assert!(err.to_string().contains("accounts"), "{err}");
    drop(tx);

    // Missing column.
    t.exec("CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, balance BIGINT NOT NULL)")
        .await;
    let mut tx = t.db.begin().await.unwrap();
    let err = Account::find(&mut tx, &1).await.unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    drop(tx);

    // A column of the wrong type: the decode error names the column.
    t.exec("DROP TABLE accounts").await;
    t.exec(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
         balance VARCHAR(8) NOT NULL, version BIGINT NOT NULL)",
    )
    .await;
    t.exec("INSERT INTO accounts (id, owner, balance, version) VALUES (1, 'a', 'lots', 0)")
        .await;
    let mut tx = t.db.begin().await.unwrap();
    let err = Account::find(&mut tx, &1).await.unwrap_err();
    assert!(err.to_string().contains("`balance`"), "{err}");
    drop(tx);

    // A value that does not fit its column is the database's error.
    t.exec("DROP TABLE accounts").await;
    let ddl = if backend == Backend::Sqlite {
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL CHECK (length(owner) <= 4), \
         balance INTEGER NOT NULL, version INTEGER NOT NULL) STRICT"
    } else {
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(4) NOT NULL, \
         balance BIGINT NOT NULL, version BIGINT NOT NULL)"
    };
    t.exec(ddl).await;
    let mut tx = t.db.begin().await.unwrap();
    let long = Account {
        id: 1,
        owner: "far too long".into(),
        balance: 0,
        version: 0,
    };
    let err = long.insert(&mut tx).await.unwrap_err();
    assert!(matches!(err, Error::Database(_)), "{err:?}");
    drop(tx);
    t.cleanup().await;
}

on_every_backend!(
    idempotent_insert_on_a_key_that_is_not_the_primary_key,
    insert_find_update_delete_round_trip,
    stale_update_is_a_conflict_and_leaves_the_row_unchanged,
    update_or_delete_of_a_missing_row_is_not_found,
    plain_insert_of_a_duplicate_key_is_an_error,
    idempotent_insert_reports_already_exists_for_a_duplicate_key,
    idempotent_insert_still_fails_on_not_null_check_and_foreign_key,
    lock_returns_the_row_and_holds_it_until_commit,
    composite_keys_renamed_columns_and_skipped_fields,
    locked_only_records_write_through_the_held_row,
    transaction_commits_on_ok_and_rolls_back_on_err_and_panic,
    retry_runs_a_new_transaction_per_attempt_and_stops_on_fatal_errors,
    bad_input_gives_errors_naming_what_was_wrong,
);

on_servers!(lock_nowait_is_lock_busy_and_skip_locked_skips_while_another_holds_the_row);

#[tokio::test]
async fn connection_errors_name_the_url_but_never_the_password() {
    let secret = "s3cr3t-pw";
    for url in [
        format!("mysql://safesync:{secret}@127.0.0.1:3306/safesync"),
        format!("postgres://nobody:{secret}@127.0.0.1:1/test"),
    ] {
        let err = Db::connect_with(
            &url,
            DbOptions::default().acquire_timeout(std::time::Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, Error::Connect { .. }), "{shown}");
        assert!(!shown.contains(secret), "password leaked: {shown}");
        assert!(shown.contains(":***@127.0.0.1"), "{shown}");
    }
    let err = Db::connect(&format!("redis://u:{secret}@h"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if !m.contains(secret) && m.contains("unsupported database URL")),
        "{err:?}"
    );
    let err = Db::connect(&format!("mysql://u:{secret}@h:notaport/db"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if !m.contains(secret) && m.contains("cannot parse")),
        "{err:?}"
    );
}
