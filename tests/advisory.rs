//! Named advisory locks on every backend: exclusion, timeouts, release on
//! drop, loss of the holder's connection, and mutual exclusion across real
//! processes.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::{LockOptions, sqlx};

async fn a_held_lock_excludes_others_until_released(backend: Backend) {
    let t = TestDb::new(backend).await;
    let other = t.other_db().await;
    let name = common::unique("job");

    let guard =
        t.db.advisory_lock(&name, Duration::from_secs(1))
            .await
            .unwrap();
    assert!(guard.is_held());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), guard.lost())
            .await
            .is_err(),
        "a held lock is not reported lost"
    );
    assert!(other.try_advisory_lock(&name).await.unwrap().is_none());

    let start = Instant::now();
    let err = other
        .advisory_lock(&name, Duration::from_millis(300))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(&err, Error::LockTimeout { name: n, .. } if *n == name),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(250),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");

    // Another name is independent.
    let unrelated = other.try_advisory_lock(&format!("{name}-b")).await.unwrap();
    assert!(unrelated.is_some());

    guard.release().await.unwrap();
    let again = other
        .advisory_lock(&name, Duration::from_secs(2))
        .await
        .unwrap();
    again.release().await.unwrap();
    t.cleanup().await;
}

async fn a_dropped_guard_frees_the_lock(backend: Backend) {
    let t = TestDb::new(backend).await;
    let other = t.other_db().await;
    let name = common::unique("drop");
    let guard =
        t.db.advisory_lock(&name, Duration::from_secs(1))
            .await
            .unwrap();
    drop(guard);
    // The guard's connection closes; the server frees the lock shortly after.
    let g = other
        .advisory_lock(&name, Duration::from_secs(10))
        .await
        .unwrap();
    g.release().await.unwrap();

    // A cancelled acquisition leaves nothing behind either.
    let holder =
        t.db.advisory_lock(&name, Duration::from_secs(1))
            .await
            .unwrap();
    let waiting = other.advisory_lock(&name, Duration::from_secs(30));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), waiting)
            .await
            .is_err()
    );
    holder.release().await.unwrap();
    let g = other
        .advisory_lock(&name, Duration::from_secs(10))
        .await
        .unwrap();
    g.release().await.unwrap();
    t.cleanup().await;
}

async fn long_names_are_accepted_and_stay_distinct(backend: Backend) {
    let t = TestDb::new(backend).await;
    let long_a = format!("{}-{}", "x".repeat(100), common::unique("a"));
    let long_b = format!("{}-{}", "x".repeat(100), common::unique("b"));
    let a =
        t.db.advisory_lock(&long_a, Duration::from_secs(1))
            .await
            .unwrap();
    let b =
        t.db.advisory_lock(&long_b, Duration::from_secs(1))
            .await
            .unwrap();
    assert!(t.db.try_advisory_lock(&long_a).await.unwrap().is_none());
    a.release().await.unwrap();
    b.release().await.unwrap();
    t.cleanup().await;
}

/// Kills the holder's connection from outside; the guard must notice within
/// its ping interval, and another holder can then take the lock.
///
/// Servers only: a SQLite file lock has no connection to lose.
async fn a_killed_connection_is_reported_as_lock_lost(backend: Backend) {
    let t = TestDb::new(backend).await;
    let other = t.other_db().await;
    let name = common::unique("lost");
    let guard =
        t.db.advisory_lock_with(
            &name,
            LockOptions::new(Duration::from_secs(1)).ping_interval(Duration::from_millis(200)),
        )
        .await
        .unwrap()
        .unwrap();
    common::kill_session(backend, &other, guard.session_id().unwrap()).await;
    let start = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("loss reported within the ping interval");
    assert!(matches!(err, Error::LockLost { .. }));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(!guard.is_held());
    let next = other
        .advisory_lock(&name, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(guard.release().await, Err(Error::LockLost { .. })));
    next.release().await.unwrap();
    t.cleanup().await;
}

const PROCESSES: usize = 8;
const SECTIONS: i64 = 200;
const CHILD_ENV: &str = "SAFESYNC_ADVISORY_CHILD";

/// 8 separate processes × 200 critical sections on one name, each a
/// non-atomic read-then-write of a counter: exact count, never two holders.
async fn separate_processes_never_hold_the_lock_together(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, holders BIGINT NOT NULL, max_holders BIGINT NOT NULL)")
        .await;
    t.exec("INSERT INTO counter (id, n, holders, max_holders) VALUES (1, 0, 0, 0)")
        .await;
    let name = common::unique("mutex");
    common::processes::run(
        "multiprocess_child",
        CHILD_ENV,
        [backend.name(), t.namespace(), &name],
        PROCESSES,
        Duration::from_secs(300),
    )
    .await;
    let (n, max) = read_counter(&t.db).await;
    eprintln!("{backend:?}: {n} critical sections, max concurrent holders {max}");
    assert_eq!(n, i64::try_from(PROCESSES).unwrap() * SECTIONS);
    assert_eq!(max, 1, "two processes held the lock at once");
    t.cleanup().await;
}

async fn read_counter(db: &Db) -> (i64, i64) {
    let sql = "SELECT n, max_holders FROM counter WHERE id = 1";
    match db.dialect() {
        safesync::Dialect::MySql => sqlx::query_as(sql)
            .fetch_one(db.as_mysql().unwrap())
            .await
            .unwrap(),
        safesync::Dialect::Postgres => sqlx::query_as(sql)
            .fetch_one(db.as_postgres().unwrap())
            .await
            .unwrap(),
        _ => sqlx::query_as(sql)
            .fetch_one(db.as_sqlite().unwrap())
            .await
            .unwrap(),
    }
}

/// The body of one child process of
/// `separate_processes_never_hold_the_lock_together`; a no-op unless the
/// parent started this binary with the child variable set.
#[test]
fn multiprocess_child() {
    let Some((backend, namespace, name, rt)) = common::processes::child(CHILD_ENV) else {
        return;
    };
    rt.block_on(async move {
        let db = common::attach(backend, &namespace).await;
        let greatest = if backend == Backend::Sqlite {
            "MAX"
        } else {
            "GREATEST"
        };
        for _ in 0..SECTIONS {
            let guard = db
                .advisory_lock(&name, Duration::from_secs(120))
                .await
                .unwrap();
            db.execute("UPDATE counter SET holders = holders + 1 WHERE id = 1")
                .await
                .unwrap();
            db.execute(&format!(
                "UPDATE counter SET max_holders = {greatest}(max_holders, holders) WHERE id = 1"
            ))
            .await
            .unwrap();
            let (n, _) = read_counter(&db).await;
            tokio::task::yield_now().await;
            db.execute_with("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))
                .await
                .unwrap();
            db.execute("UPDATE counter SET holders = holders - 1 WHERE id = 1")
                .await
                .unwrap();
            guard.release().await.unwrap();
        }
    });
}

/// A lock connection released cleanly serves the next lock (no new
/// connection); one whose guard was dropped is never reused; a kept one
/// that died while idle is replaced without the caller seeing an error.
///
/// Servers only: SQLite file locks have no connection.
async fn released_lock_connections_are_reused_and_no_other(backend: Backend) {
    let t = TestDb::new(backend).await;
    let other = t.other_db().await;
    let [a, b, c] = ["reuse-a", "reuse-b", "reuse-c"].map(common::unique);
    let lock = |name: String| {
        let db = t.db.clone();
        async move {
            db.advisory_lock(&name, Duration::from_secs(5))
                .await
                .unwrap()
        }
    };

    let first = lock(a.clone()).await;
    let id = first.session_id().unwrap();
    first.release().await.unwrap();
    let second = lock(b.clone()).await;
    assert_eq!(
        second.session_id(),
        Some(id),
        "a released connection is reused"
    );

    // Dropped without release: its connection is closed, the lock freed,
    // and the next lock runs on another connection.
    drop(second);
    let taken = other
        .advisory_lock(&b, Duration::from_secs(5))
        .await
        .unwrap();
    taken.release().await.unwrap();
    let third = lock(c.clone()).await;
    let third_id = third.session_id().unwrap();
    assert_ne!(third_id, id, "a dropped guard's connection is never reused");
    third.release().await.unwrap();

    // The kept connection dies while idle: the next lock still succeeds.
    common::kill_session(backend, &other, third_id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fourth = lock(a.clone()).await;
    assert_ne!(fourth.session_id(), Some(third_id));
    assert!(other.try_advisory_lock(&a).await.unwrap().is_none());
    fourth.release().await.unwrap();

    // With no idle connections kept, every lock connects anew.
    let url = match backend {
        Backend::MySql => common::mysql_url(),
        _ => common::pg_url(),
    };
    let fresh = Db::connect_with(&url, DbOptions::default().idle_lock_connections(0))
        .await
        .unwrap();
    let once = fresh
        .advisory_lock(&a, Duration::from_secs(5))
        .await
        .unwrap();
    let once_id = once.session_id();
    once.release().await.unwrap();
    let again = fresh
        .advisory_lock(&a, Duration::from_secs(5))
        .await
        .unwrap();
    assert_ne!(again.session_id(), once_id);
    again.release().await.unwrap();
    fresh.close().await;
    t.cleanup().await;
}

/// SQLite keeps lock files open between locks, but not without bound:
/// after locks on 200 names, at most 64 lock files stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lock_files_stay_open_within_a_bound() {
    let t = TestDb::new(Backend::Sqlite).await;
    let file =
        t.db.as_sqlite()
            .unwrap()
            .connect_options()
            .get_filename()
            .to_string_lossy()
            .into_owned();
    let open_lock_files = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| {
                target
                    .to_string_lossy()
                    .starts_with(&format!("{file}.lock-"))
            })
            .count()
    };
    for i in 0..200 {
        let guard =
            t.db.advisory_lock(&format!("bounded-{i}"), Duration::from_secs(1))
                .await
                .unwrap();
        guard.release().await.unwrap();
    }
    let open = open_lock_files();
    assert!((1..=64).contains(&open), "{open} lock files open");
    // A kept file is locked again by the next holder, and only by one.
    let first =
        t.db.advisory_lock("bounded-199", Duration::from_secs(1))
            .await
            .unwrap();
    assert!(
        t.db.try_advisory_lock("bounded-199")
            .await
            .unwrap()
            .is_none()
    );
    drop(first);
    assert!(
        t.db.try_advisory_lock("bounded-199")
            .await
            .unwrap()
            .is_some()
    );
    t.cleanup().await;
}

/// A SQLite database reached by another path (a symlink to its file, as a
/// deployment's `current/` link or a mounted path gives) locks the same
/// lock file: the holder through one path excludes the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locks_hold_across_paths_to_one_database() {
    let t = TestDb::new(Backend::Sqlite).await;
    let file = t.namespace().strip_prefix("sqlite:").unwrap().to_owned();
    let alias = format!("{file}.alias");
    std::os::unix::fs::symlink(&file, &alias).unwrap();
    let by_alias = Db::connect(&format!("sqlite:{alias}")).await.unwrap();

    let held =
        t.db.advisory_lock("across-paths", Duration::from_secs(1))
            .await
            .unwrap();
    assert!(
        by_alias
            .try_advisory_lock("across-paths")
            .await
            .unwrap()
            .is_none(),
        "the lock taken through {file} was taken again through the symlink {alias}"
    );
    held.release().await.unwrap();
    let other = by_alias
        .try_advisory_lock("across-paths")
        .await
        .unwrap()
        .expect("free once released");
    other.release().await.unwrap();
    by_alias.close().await;
    t.cleanup().await;
}

on_servers!(
    released_lock_connections_are_reused_and_no_other,
    a_killed_connection_is_reported_as_lock_lost,
);

on_every_backend!(
    a_held_lock_excludes_others_until_released,
    a_dropped_guard_frees_the_lock,
    long_names_are_accepted_and_stay_distinct,
    separate_processes_never_hold_the_lock_together,
    a_transaction_scoped_lock_is_held_until_commit_or_rollback,
);

async fn a_transaction_scoped_lock_is_held_until_commit_or_rollback(backend: Backend) {
    let t = TestDb::new(backend).await;
    let other = t.other_db().await;
    let name = common::unique("xact");

    let mut tx = t.db.begin().await.unwrap();
    tx.advisory_xact_lock(&name, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        other.try_advisory_lock(&name).await.unwrap().is_none(),
        "held inside the transaction"
    );
    tx.commit().await.unwrap();
    let g = other
        .advisory_lock(&name, Duration::from_secs(5))
        .await
        .expect("free after commit");

    // Busy: a timeout, and (Postgres included) the transaction stays usable.
    let mut tx = t.db.begin().await.unwrap();
    let err = tx
        .advisory_xact_lock(&name, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    tx.execute("SELECT 1").await.unwrap();
    g.release().await.unwrap();
    tx.advisory_xact_lock(&name, Duration::from_secs(1))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let g = other
        .advisory_lock(&name, Duration::from_secs(5))
        .await
        .expect("free after rollback");
    g.release().await.unwrap();

    // Dropped without commit or rollback: freed as well.
    let mut tx = t.db.begin().await.unwrap();
    tx.advisory_xact_lock(&name, Duration::from_secs(1))
        .await
        .unwrap();
    drop(tx);
    let g = other
        .advisory_lock(&name, Duration::from_secs(10))
        .await
        .expect("free after drop");
    g.release().await.unwrap();
    t.cleanup().await;
}

/// The key of a name is FNV-1a 64 of its UTF-8 bytes, pinned here for real
/// names (the values computed independently of this crate; "a" is FNV's
/// published test vector): a process built from another version, or on
/// another machine, takes the same lock for the same name.
#[test]
fn advisory_keys_are_stable_across_builds() {
    let pinned: [(&str, u64); 7] = [
        ("", 0xcbf2_9ce4_8422_2325),
        ("a", 0xaf63_dc4c_8601_ec8c),
        ("user:42", 0x6c15_1ea4_dcd2_21c2),
        ("user:43", 0x6c15_1fa4_dcd2_2375),
        ("orders:1", 0x9501_9084_fb1a_4b29),
        ("billing-cron", 0xaf03_4d90_1481_6d8f),
        ("ключ:7", 0x13ba_a614_e8f0_d302),
    ];
    for (name, key) in pinned {
        assert_eq!(
            safesync::advisory_key(name),
            i64::from_ne_bytes(key.to_ne_bytes()),
            "advisory_key({name:?})"
        );
    }
}
