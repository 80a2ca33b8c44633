//! Fencing tokens of named locks on every backend: a holder that lost its
//! lock without noticing cannot write after its successor; a fence that
//! passed holds the next acquisition off until its transaction ends (and
//! that wait is bounded); tokens strictly increase across real processes.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::{DbOptions, LockOptions};

/// A ping interval long enough that a guard never notices its loss within
/// a test: the stale holder believes it still holds the lock.
const NEVER_NOTICED: Duration = Duration::from_secs(600);

/// The writers whose rows are in `report`, in key order.
async fn writers(db: &Db) -> Vec<String> {
    db.fetch_all::<String>("SELECT writer FROM report ORDER BY id", ())
        .await
        .unwrap()
}

/// Holder A takes the lock; A loses it without noticing; B takes it and
/// writes under its fence; A's fenced write is rejected and nothing of
/// A's lands.
///
/// How A loses the lock: on the servers, its lock connection is killed
/// (MySQL `KILL`, PostgreSQL `pg_terminate_backend`), as an operator, a
/// failover or a network partition would. A SQLite file lock has no
/// connection: the OS keeps it until the holding process closes the file
/// or dies (and a dead process writes nothing). What makes a SQLite holder
/// stale is its lock file removed under it (a cleaner of temporary files,
/// an operator): the next process creates a new file and locks that while
/// A still holds the old one. B here is another process that takes the
/// lock after the file was removed, and the tokens, kept in the database
/// itself, still order them.
async fn a_stale_holder_cannot_write_after_its_successor(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE report (id BIGINT PRIMARY KEY, writer VARCHAR(16) NOT NULL)")
        .await;
    let name = common::unique("fence");
    let a =
        t.db.advisory_lock_with(
            &name,
            LockOptions::new(Duration::from_secs(5)).ping_interval(NEVER_NOTICED),
        )
        .await
        .unwrap()
        .unwrap();

    // B takes the lock and commits under its fence: on SQLite in another
    // process (this one's holders of one lock file queue in-process), after
    // A's lock file was removed; on the servers after A's session was killed.
    let (other, b) = if backend == Backend::Sqlite {
        let db_file = t.namespace().strip_prefix("sqlite:").unwrap();
        let lock_file = format!(
            "{}.lock-{:016x}",
            std::fs::canonicalize(db_file).unwrap().display(),
            safesync::advisory_key(&name)
        );
        std::fs::remove_file(&lock_file).unwrap();
        common::processes::run(
            "fence_successor_child",
            SUCCESSOR_ENV,
            [backend.name(), t.namespace(), &name],
            1,
            Duration::from_secs(60),
        )
        .await;
        (None, None)
    } else {
        let other = t.other_db().await;
        common::kill_session(backend, &other, a.session_id().unwrap()).await;
        let b = other
            .advisory_lock(&name, Duration::from_secs(10))
            .await
            .unwrap();
        write_fenced(&other, &b, "B").await;
        (Some(other), Some(b))
    };
    let b_token = u64::try_from(
        t.db.fetch_one::<i64>("SELECT token FROM safesync_fence WHERE name = ?", (&*name,))
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        b_token > a.token(),
        "B's token {b_token} after A's {}",
        a.token()
    );
    if let Some(b) = &b {
        assert_eq!(b.token(), b_token);
    }

    // A has not noticed anything and goes on writing.
    assert!(a.is_held(), "A believes it still holds the lock");
    let mut tx = t.db.begin().await.unwrap();
    tx.execute_with("INSERT INTO report (id, writer) VALUES (?, ?)", (2, "A"))
        .await
        .unwrap();
    let err = tx.fence(&a).await.unwrap_err();
    assert!(
        matches!(&err, Error::Fenced { name: n, token, current }
            if *n == name && *token == a.token() && *current == b_token),
        "{err:?}"
    );
    assert!(err.to_string().contains(&name), "{err}");
    drop(tx);

    assert_eq!(writers(&t.db).await, ["B"], "nothing of A's landed");
    if let Some(b) = b {
        b.release().await.unwrap();
    }
    drop(a);
    if let Some(other) = other {
        other.close().await;
    }
    t.cleanup().await;
}

/// B's writes: row 1 by `writer`, under the fence of `guard`.
async fn write_fenced(db: &Db, guard: &safesync::AdvisoryLock, writer: &str) {
    let mut tx = db.begin().await.unwrap();
    tx.execute_with("INSERT INTO report (id, writer) VALUES (?, ?)", (1, writer))
        .await
        .unwrap();
    tx.fence(guard).await.unwrap();
    tx.commit().await.unwrap();
}

const SUCCESSOR_ENV: &str = "SAFESYNC_FENCE_SUCCESSOR";

/// B of `a_stale_holder_cannot_write_after_its_successor` on SQLite, in a
/// process of its own; a no-op unless the parent set the variable.
#[test]
fn fence_successor_child() {
    let Some((backend, namespace, name, rt)) = common::processes::child(SUCCESSOR_ENV) else {
        return;
    };
    rt.block_on(async move {
        let db = common::attach(backend, &namespace).await;
        let b = db
            .advisory_lock(&name, Duration::from_secs(5))
            .await
            .unwrap();
        write_fenced(&db, &b, "B").await;
        b.release().await.unwrap();
        db.close().await;
    });
}

/// A fence that passed stays true until its transaction ends: the next
/// holder gets the lock but not its token until then, so the fenced
/// writes commit before any later holder exists. The wait is bounded by
/// the acquiring `Db`'s lock timeout (SQLite: its busy timeout, the bound
/// of waiting for another connection's write lock), after which the lock
/// is released again.
async fn a_passed_fence_holds_off_the_next_token_until_commit(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE report (id BIGINT PRIMARY KEY, writer VARCHAR(16) NOT NULL)")
        .await;
    let other = t.other_db().await;
    let name = common::unique("hold");

    let a =
        t.db.advisory_lock(&name, Duration::from_secs(5))
            .await
            .unwrap();
    let a_token = a.token();
    let mut tx = t.db.begin().await.unwrap();
    tx.fence(&a).await.unwrap();
    tx.execute_with("INSERT INTO report (id, writer) VALUES (?, ?)", (1, "A"))
        .await
        .unwrap();
    // A's lock goes (released here; killed or timed out alike) while its
    // fenced transaction is still open.
    a.release().await.unwrap();

    let next = tokio::spawn({
        let other = other.clone();
        let name = name.clone();
        async move { other.advisory_lock(&name, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !next.is_finished(),
        "the next holder got a token while a passed fence was uncommitted"
    );
    tx.commit().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the next holder gets its token once the fenced transaction commits")
        .unwrap()
        .unwrap();
    assert!(b.token() > a_token);
    assert_eq!(writers(&t.db).await, ["A"]);

    // No wait forever: with B's fenced transaction open, an acquisition on
    // a Db with a short lock timeout gives up, and frees the lock.
    let mut tx = other.begin().await.unwrap();
    tx.fence(&b).await.unwrap();
    b.release().await.unwrap();
    let short = if backend == Backend::Sqlite {
        let opts = DbOptions::default()
            .busy_timeout(Duration::from_millis(300))
            .lock_timeout(Duration::from_millis(300));
        Db::connect_with(t.namespace(), opts).await.unwrap()
    } else {
        let other = t.other_db().await;
        other.with_lock_timeout(Duration::from_millis(300)).unwrap()
    };
    let start = Instant::now();
    let err = short
        .advisory_lock(&name, Duration::from_secs(1))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    if backend == Backend::Sqlite {
        // Another connection's write lock: "database is locked".
        assert!(err.is_retryable(), "{err:?}");
    } else {
        assert!(
            matches!(&err, Error::LockTimeout { name: n, .. } if n.contains("safesync_fence") && n.contains(&name)),
            "{err:?}"
        );
    }
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    drop(tx);
    let c = short
        .advisory_lock(&name, Duration::from_secs(5))
        .await
        .expect("the failed acquisition freed the lock");
    assert!(c.token() > a_token + 1);
    c.release().await.unwrap();
    short.close().await;
    other.close().await;
    t.cleanup().await;
}

const PROCESSES: usize = 8;
const ACQUISITIONS: i64 = 100;
const CHILD_ENV: &str = "SAFESYNC_FENCE_CHILD";

/// 8 separate processes × 100 acquisitions of one name: under the lock,
/// each process checks that its token is greater than every token logged
/// before (by any process) and logs it, fenced; the parent then finds
/// 800 distinct tokens, the last of them the name's current one.
async fn tokens_strictly_increase_across_processes(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE tokens (token BIGINT PRIMARY KEY, pid BIGINT NOT NULL)")
        .await;
    let name = common::unique("tokens");
    let start = Instant::now();
    common::processes::run(
        "fence_child",
        CHILD_ENV,
        [backend.name(), t.namespace(), &name],
        PROCESSES,
        Duration::from_secs(300),
    )
    .await;
    let elapsed = start.elapsed();
    let total = i64::try_from(PROCESSES).unwrap() * ACQUISITIONS;
    let logged =
        t.db.fetch_one::<i64>("SELECT COUNT(*) FROM tokens", ())
            .await
            .unwrap();
    let pids =
        t.db.fetch_one::<i64>("SELECT COUNT(DISTINCT pid) FROM tokens", ())
            .await
            .unwrap();
    let (low, high) = (
        t.db.fetch_one::<i64>("SELECT MIN(token) FROM tokens", ())
            .await
            .unwrap(),
        t.db.fetch_one::<i64>("SELECT MAX(token) FROM tokens", ())
            .await
            .unwrap(),
    );
    let current =
        t.db.fetch_one::<i64>("SELECT token FROM safesync_fence WHERE name = ?", (&*name,))
            .await
            .unwrap();
    eprintln!(
        "{backend:?}: {logged} acquisitions by {pids} processes in {elapsed:?}, tokens {low}..={high}"
    );
    assert_eq!(logged, total, "every acquisition logged a distinct token");
    assert_eq!(pids, i64::try_from(PROCESSES).unwrap());
    assert_eq!((low, high), (1, total), "no token skipped or reused");
    assert_eq!(current, high);
    t.cleanup().await;
}

/// The body of one child process of
/// `tokens_strictly_increase_across_processes`; a no-op unless the parent
/// started this binary with the child variable set.
#[test]
fn fence_child() {
    let Some((backend, namespace, name, rt)) = common::processes::child(CHILD_ENV) else {
        return;
    };
    rt.block_on(async move {
        let db = common::attach(backend, &namespace).await;
        let pid = i64::from(std::process::id());
        for _ in 0..ACQUISITIONS {
            let guard = db
                .advisory_lock(&name, Duration::from_secs(120))
                .await
                .unwrap();
            let token = i64::try_from(guard.token()).unwrap();
            let mut tx = db.begin().await.unwrap();
            let before = tx
                .fetch_one::<i64>("SELECT COALESCE(MAX(token), 0) FROM tokens", ())
                .await
                .unwrap();
            assert!(
                token > before,
                "token {token} is not above the {before} issued before"
            );
            tx.execute_with(
                "INSERT INTO tokens (token, pid) VALUES (?, ?)",
                (token, pid),
            )
            .await
            .unwrap();
            tx.fence(&guard).await.unwrap();
            tx.commit().await.unwrap();
            guard.release().await.unwrap();
        }
    });
}

on_every_backend!(
    a_stale_holder_cannot_write_after_its_successor,
    a_passed_fence_holds_off_the_next_token_until_commit,
    tokens_strictly_increase_across_processes,
);
