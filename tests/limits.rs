//! Waits are bounded and configuration values are checked, on every
//! backend: a row lock held elsewhere ends in `LockTimeout` after
//! `lock_timeout`, and a setting no backend can honour is `Error::Config`
//! naming it, never a panic.

#![allow(clippy::items_after_statements)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::{DbOptions, LockWait, RetryPolicy};

#[derive(Debug, Clone, PartialEq, Versioned, Locked)]
#[safesync(table = "slots")]
struct Slot {
    #[safesync(key)]
    id: i64,
    n: i64,
    #[safesync(version)]
    version: i64,
}

const TIMEOUT: Duration = Duration::from_secs(1);

async fn setup(backend: Backend) -> (TestDb, Db) {
    let t = TestDb::new(backend).await;
    t.exec(
        "CREATE TABLE slots (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, version BIGINT NOT NULL)",
    )
    .await;
    let mut tx = t.db.begin().await.unwrap();
    for id in [7, 8] {
        Slot {
            id,
            n: 0,
            version: 0,
        }
        .insert(&mut tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let db = t.db.clone().with_lock_timeout(TIMEOUT).unwrap();
    (t, db)
}

/// The second transaction's wait for row 7 of `db`, while another holds
/// it: on SQLite at `begin` (the write lock), elsewhere at `lock`.
async fn wait_for_held_row(db: &Db, backend: Backend) -> (Error, Duration, Option<Tx<'static>>) {
    let start = Instant::now();
    if backend == Backend::Sqlite {
        let err = db.begin().await.unwrap_err();
        return (err, start.elapsed(), None);
    }
    let mut tx = db.begin().await.unwrap();
    let start = Instant::now();
    let err = Slot::lock(&mut tx, &7).await.unwrap_err();
    (err, start.elapsed(), Some(tx))
}

async fn a_held_row_lock_times_out_naming_table_and_key(backend: Backend) {
    let (t, db) = setup(backend).await;
    let mut holder = db.begin().await.unwrap();
    assert!(Slot::lock(&mut holder, &7).await.unwrap().is_some());

    let (err, waited, second) = wait_for_held_row(&db, backend).await;
    assert!(
        waited + Duration::from_millis(50) >= TIMEOUT,
        "gave up after {waited:?}"
    );
    assert!(
        waited < TIMEOUT + Duration::from_secs(1),
        "waited {waited:?}"
    );
    let Error::LockTimeout {
        name,
        waited: said,
        what,
    } = &err
    else {
        panic!("expected LockTimeout, got {err:?}");
    };
    assert_eq!(*said, TIMEOUT);
    assert!(err.is_lock_wait_timeout());
    if backend == Backend::Sqlite {
        assert_eq!(*what, LockWait::WriteLock);
        assert_eq!(name, "SQLite write lock");
    } else {
        assert_eq!(*what, LockWait::Row);
        assert_eq!(name, "`slots` key 7");
        assert!(err.to_string().contains("row of `slots` key 7"), "{err}");
    }

    if let Some(mut tx) = second {
        if backend == Backend::MySql {
            // Only the statement was rolled back: the transaction goes on.
            let other = Slot::lock(&mut tx, &8).await.unwrap().unwrap();
            assert_eq!(other.id, 8);
        }
        tx.rollback().await.unwrap();
    }

    holder.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(Slot::lock(&mut tx, &7).await.unwrap().is_some());
    tx.commit().await.unwrap();
    t.cleanup().await;
}

async fn retry_repeats_a_lock_timeout_only_when_the_policy_opts_in(backend: Backend) {
    let (t, db) = setup(backend).await;
    let mut holder = db.begin().await.unwrap();
    assert!(Slot::lock(&mut holder, &7).await.unwrap().is_some());

    fn lock_7<'t>(tx: &'t mut Tx<'_>) -> safesync::__private::BoxFuture<'t, safesync::Result<()>> {
        Box::pin(async move { Slot::lock(tx, &7).await.map(|_| ()) })
    }
    let err = db.retry(RetryPolicy::default(), lock_7).await.unwrap_err();
    assert!(
        matches!(err, Error::LockTimeout { .. }),
        "not retried by default: {err:?}"
    );
    let policy = RetryPolicy::default()
        .max_attempts(2)
        .retry_lock_timeouts(true);
    let err = db.retry(policy, lock_7).await.unwrap_err();
    assert!(
        matches!(&err, Error::RetriesExhausted { attempts: 2, .. })
            && matches!(err.root(), Error::LockTimeout { .. }),
        "retried when opted in: {err:?}"
    );
    holder.commit().await.unwrap();
    t.cleanup().await;
}

async fn named_lock_settings_no_backend_can_take_are_config_errors(backend: Backend) {
    let t = TestDb::new(backend).await;
    let name = common::unique("limits");
    for timeout in [Duration::MAX, Duration::from_secs(25 * 24 * 3600)] {
        let err = t.db.advisory_lock(&name, timeout).await.unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("named-lock timeout")),
            "{err:?}"
        );
        let mut tx = t.db.begin().await.unwrap();
        let err = tx.advisory_xact_lock(&name, timeout).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        tx.rollback().await.unwrap();
    }
    // The longest allowed wait is fine (the lock is free).
    let guard =
        t.db.advisory_lock(&name, Duration::from_secs(24 * 24 * 3600))
            .await
            .unwrap();
    guard.release().await.unwrap();

    let err = t.db.try_advisory_lock("").await.unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("non-empty name")),
        "{err:?}"
    );
    let err =
        t.db.advisory_lock("", Duration::from_secs(1))
            .await
            .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let mut tx = t.db.begin().await.unwrap();
    let err = tx.advisory_xact_lock("", Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    tx.rollback().await.unwrap();
    t.cleanup().await;
}

async fn a_lock_timeout_too_long_is_a_config_error(backend: Backend) {
    let t = TestDb::new(backend).await;
    let err = t.db.clone().with_lock_timeout(Duration::MAX).unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("with_lock_timeout")),
        "{err:?}"
    );
    let url = match backend {
        Backend::Sqlite => "sqlite::memory:".to_owned(),
        Backend::MySql => common::mysql_url(),
        Backend::Postgres => common::pg_url(),
    };
    let err = Db::connect_with(&url, DbOptions::default().lock_timeout(Duration::MAX))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("DbOptions::lock_timeout")),
        "{err:?}"
    );
    t.cleanup().await;
}

/// A `Table` written by hand with no key column.
#[derive(Debug)]
struct NoKey;

impl safesync::__private::Table for NoKey {
    type Key = i64;
    const META: &'static safesync::__private::TableMeta = &safesync::__private::TableMeta {
        table: "slots",
        schema: None,
        columns: &["id"],
        key: &[],
        version: None,
    };
    fn statements() -> &'static safesync::__private::Statements {
        static S: safesync::__private::Statements = safesync::__private::Statements::new();
        &S
    }
    fn version(&self) -> Option<i64> {
        None
    }
    fn bump_version(&mut self) {}
    fn key_debug(&self) -> String {
        String::new()
    }
}

macro_rules! no_key_codec {
    ($($db:ty),*) => {$(
        impl safesync::__private::RowCodec<$db> for NoKey {
            fn bind_all<'q>(&'q self, _: &mut <$db as sqlx::Database>::Arguments<'q>) -> Result<(), sqlx::error::BoxDynError> { Ok(()) }
            fn bind_values<'q>(&'q self, _: &mut <$db as sqlx::Database>::Arguments<'q>) -> Result<(), sqlx::error::BoxDynError> { Ok(()) }
            fn bind_own_key<'q>(&'q self, _: &mut <$db as sqlx::Database>::Arguments<'q>) -> Result<(), sqlx::error::BoxDynError> { Ok(()) }
            fn bind_version<'q>(&'q self, _: &mut <$db as sqlx::Database>::Arguments<'q>) -> Result<(), sqlx::error::BoxDynError> { Ok(()) }
            fn bind_key<'q>(_: &'q i64, _: &mut <$db as sqlx::Database>::Arguments<'q>) -> Result<(), sqlx::error::BoxDynError> { Ok(()) }
            fn decode(_: &<$db as sqlx::Database>::Row) -> Result<Self, sqlx::Error> { Err(sqlx::Error::RowNotFound) }
        }
    )*};
}
use safesync::sqlx;
no_key_codec!(sqlx::Sqlite, sqlx::MySql, sqlx::Postgres);

async fn a_hand_written_table_without_key_is_a_config_error(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE slots (id BIGINT PRIMARY KEY)").await;
    let mut tx = t.db.begin().await.unwrap();
    let err = NoKey::find(&mut tx, &1).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("`slots`") && m.contains("empty `key`")),
        "{err:?}"
    );
    let err = NoKey.insert(&mut tx).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    tx.rollback().await.unwrap();
    t.cleanup().await;
}

on_every_backend!(
    a_held_row_lock_times_out_naming_table_and_key,
    retry_repeats_a_lock_timeout_only_when_the_policy_opts_in,
    named_lock_settings_no_backend_can_take_are_config_errors,
    a_lock_timeout_too_long_is_a_config_error,
    a_hand_written_table_without_key_is_a_config_error,
);

#[tokio::test]
async fn a_sqlite_busy_timeout_too_long_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    for busy in [Duration::MAX, Duration::from_secs(25 * 24 * 3600)] {
        let err = Db::connect_with(&url, DbOptions::default().busy_timeout(busy))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("DbOptions::busy_timeout")),
            "{err:?}"
        );
    }
    let db = Db::connect_with(
        &url,
        DbOptions::default().busy_timeout(Duration::from_secs(24 * 24 * 3600)),
    )
    .await
    .unwrap();
    db.close().await;
}

#[tokio::test]
async fn a_sqlite_file_named_lock_with_the_longest_timeout_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    let db = Db::connect(&url).await.unwrap();
    let err = db.advisory_lock("x", Duration::MAX).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let guard = db.advisory_lock("x", Duration::from_secs(1)).await.unwrap();
    let other = Db::connect(&url).await.unwrap();
    // Held elsewhere: a long (allowed) wait is cut short by the test.
    let waiting = tokio::time::timeout(
        Duration::from_millis(200),
        other.advisory_lock("x", Duration::from_secs(24 * 24 * 3600)),
    )
    .await;
    assert!(waiting.is_err(), "still waiting");
    guard.release().await.unwrap();
}
