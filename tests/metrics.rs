//! Prometheus metrics and tracing spans: a known workload gives exact counts
//! on every backend, a metrics failure never fails a database call, and the
//! spans nest transaction > record operation.

#![allow(clippy::manual_assert)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::{Metrics, prometheus};

#[derive(Debug, Clone, PartialEq, Versioned, Locked)]
#[safesync(table = "ledger")]
struct Ledger {
    #[safesync(key)]
    id: i64,
    amount: i64,
    #[safesync(version)]
    version: i64,
}

const LEDGER: &str =
    "CREATE TABLE ledger (id BIGINT PRIMARY KEY, amount BIGINT NOT NULL, version BIGINT NOT NULL)";

fn row(id: i64) -> Ledger {
    Ledger {
        id,
        amount: 0,
        version: 0,
    }
}

fn scrape(registry: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap()
}

/// Every sample line of the family `name` (`name{…} value` or
/// `name value`), sorted.
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect();
    lines.sort_unstable();
    lines
}

/// `name` before each of `samples` (`{labels} value`), sorted.
fn with_name(name: &str, samples: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = samples.iter().map(|s| format!("{name}{s}")).collect();
    lines.sort_unstable();
    lines
}

async fn find(db: &Db, id: i64) -> Ledger {
    let mut tx = db.begin().await.unwrap();
    let r = Ledger::find(&mut tx, &id).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    r
}

async fn a_known_workload_gives_exact_counts(backend: Backend) {
    spans::recorder();
    let t = TestDb::new(backend).await;
    t.exec(LEDGER).await;
    let registry = prometheus::Registry::new();
    let db =
        t.db.clone()
            .with_metrics(Metrics::register(&registry).unwrap());

    // 3 inserts.
    let mut tx = db.begin().await.unwrap();
    for id in 1..=3 {
        row(id).insert(&mut tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    // 1 idempotent insert of an existing key, 1 plain duplicate insert.
    let mut tx = db.begin().await.unwrap();
    assert_eq!(
        row(1).insert_idempotent(&mut tx).await.unwrap(),
        Inserted::AlreadyExists
    );
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let err = row(1).insert(&mut tx).await.unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err:?}");
    tx.rollback().await.unwrap();

    // 2 updates.
    let stale1 = find(&db, 1).await;
    let stale2 = find(&db, 2).await;
    let mut tx = db.begin().await.unwrap();
    let (mut a1, mut a2) = (stale1.clone(), stale2.clone());
    a1.amount = 10;
    a2.amount = 20;
    a1.update(&mut tx).await.unwrap();
    a2.update(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    // 1 stale update: a conflict.
    let mut tx = db.begin().await.unwrap();
    let err = stale1.clone().update(&mut tx).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    tx.rollback().await.unwrap();

    // 1 delete, then an update of the deleted row: not found.
    let gone = find(&db, 3).await;
    let mut tx = db.begin().await.unwrap();
    gone.delete(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let err = gone.clone().update(&mut tx).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    tx.rollback().await.unwrap();

    // Row locks: one taken, one absent, one skipped.
    let mut tx = db.begin().await.unwrap();
    assert!(Ledger::lock(&mut tx, &1).await.unwrap().is_some());
    assert!(Ledger::lock_nowait(&mut tx, &99).await.unwrap().is_none());
    assert!(
        Ledger::lock_skip_locked(&mut tx, &99)
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();

    // A retry whose first attempt writes a stale row (a real conflict) and
    // whose second re-reads and succeeds: 1 retry attempt.
    let attempts = AtomicU32::new(0);
    let (attempts, stale2) = (&attempts, &stale2);
    let policy = RetryPolicy::default().base_delay(Duration::from_millis(1));
    db.retry(policy, |tx| {
        Box::pin(async move {
            if attempts.fetch_add(1, Ordering::Relaxed) == 0 {
                return stale2.clone().update(tx).await;
            }
            let mut r = Ledger::find(tx, &2).await?.ok_or_else(Error::not_found)?;
            r.amount += 1;
            r.update(tx).await
        })
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
    assert_eq!(find(&db, 2).await.amount, 21);

    assert_workload_counts(&scrape(&registry));
    t.cleanup().await;
}

/// The exact samples of the workload above: every write, conflict, retry
/// and row lock counted once, and nothing else.
fn assert_workload_counts(text: &str) {
    let writes = [
        r#"{op="delete",outcome="ok",table="ledger"} 1"#,
        r#"{op="insert",outcome="duplicate",table="ledger"} 1"#,
        r#"{op="insert",outcome="ok",table="ledger"} 3"#,
        r#"{op="insert_idempotent",outcome="already_exists",table="ledger"} 1"#,
        r#"{op="update",outcome="conflict",table="ledger"} 2"#,
        r#"{op="update",outcome="not_found",table="ledger"} 1"#,
        r#"{op="update",outcome="ok",table="ledger"} 3"#,
    ];
    assert_eq!(
        series(text, "safesync_db_write_total"),
        with_name("safesync_db_write_total", &writes),
        "{text}"
    );
    assert_eq!(
        series(text, "safesync_db_write_latency_seconds_count"),
        with_name("safesync_db_write_latency_seconds_count", &writes),
        "{text}"
    );
    assert_eq!(
        series(text, "safesync_occ_conflicts_total"),
        [r#"safesync_occ_conflicts_total{table="ledger"} 2"#],
        "{text}"
    );
    assert_eq!(
        series(text, "safesync_retry_attempts_total"),
        ["safesync_retry_attempts_total 1"],
        "{text}"
    );
    assert_eq!(
        series(text, "safesync_lock_acquire_latency_seconds_count"),
        [
            r#"safesync_lock_acquire_latency_seconds_count{kind="row",outcome="acquired"} 1"#,
            r#"safesync_lock_acquire_latency_seconds_count{kind="row_nowait",outcome="absent"} 1"#,
            r#"safesync_lock_acquire_latency_seconds_count{kind="row_skip_locked",outcome="skipped"} 1"#,
        ],
        "{text}"
    );
    // Named locks are not used here (see
    // `named_locks_count_acquires_held_time_and_losses`): no samples.
    assert!(series(text, "safesync_lock_held_seconds_count").is_empty());
    assert!(series(text, "safesync_lock_lost_total").is_empty());
}

async fn a_clashing_registry_fails_registration_but_never_a_database_call(backend: Backend) {
    spans::recorder();
    let t = TestDb::new(backend).await;
    t.exec(LEDGER).await;
    let registry = prometheus::Registry::new();
    let squatter = prometheus::IntCounterVec::new(
        prometheus::Opts::new("safesync_db_write_total", "someone else's"),
        &["table"],
    )
    .unwrap();
    registry.register(Box::new(squatter.clone())).unwrap();

    let err = Metrics::register(&registry).unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("safesync metrics")),
        "{err:?}"
    );
    // The all-or-nothing registration left only the squatter behind.
    let families: Vec<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert!(
        families.iter().all(|n| n == "safesync_db_write_total"),
        "{families:?}"
    );

    // A Db whose metrics are registered nowhere (the registry refused
    // them, then a second instance was made for another registry that is
    // dropped at once) still works, and so does the default one.
    let orphan = Metrics::register(&prometheus::Registry::new()).unwrap();
    for db in [t.db.clone(), t.db.clone().with_metrics(orphan)] {
        let mut tx = db.begin().await.unwrap();
        let _ = row(1).insert_idempotent(&mut tx).await.unwrap();
        let mut r = Ledger::lock(&mut tx, &1).await.unwrap().unwrap();
        r.amount += 1;
        r.update(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(find(&t.db, 1).await.amount, 2);
    assert_eq!(
        squatter.with_label_values(&["ledger"]).get(),
        0,
        "safesync never writes into someone else's collector"
    );
    t.cleanup().await;
}

/// Named locks: one acquired, one refused while held (`timeout`), the held
/// time of each released guard, and — on the servers — a lock whose
/// connection is killed counted as lost.
async fn named_locks_count_acquires_held_time_and_losses(backend: Backend) {
    spans::recorder();
    let t = TestDb::new(backend).await;
    let registry = prometheus::Registry::new();
    let db =
        t.db.clone()
            .with_metrics(Metrics::register(&registry).unwrap());
    let name = common::unique("m_lock");

    let held = db
        .advisory_lock(&name, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(db.try_advisory_lock(&name).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.release().await.unwrap();

    let mut acquired = 1;
    let mut lost = Vec::new();
    if backend != Backend::Sqlite {
        // A file lock has no connection to kill: loss exists on servers only.
        let other = t.other_db().await;
        let doomed = db
            .advisory_lock_with(
                &common::unique("m_lost"),
                safesync::LockOptions::new(Duration::from_secs(5))
                    .ping_interval(Duration::from_millis(100)),
            )
            .await
            .unwrap()
            .unwrap();
        common::kill_session(backend, &other, doomed.session_id().unwrap()).await;
        tokio::time::timeout(Duration::from_secs(5), doomed.lost())
            .await
            .expect("the loss is noticed within a few pings");
        drop(doomed);
        other.close().await;
        acquired += 1;
        lost.push(r#"safesync_lock_lost_total{kind="advisory"} 1"#.to_owned());
    }

    let text = scrape(&registry);
    assert_eq!(
        series(&text, "safesync_lock_acquire_latency_seconds_count"),
        [
            format!(
                r#"safesync_lock_acquire_latency_seconds_count{{kind="advisory",outcome="acquired"}} {acquired}"#
            ),
            r#"safesync_lock_acquire_latency_seconds_count{kind="advisory",outcome="timeout"} 1"#
                .to_owned(),
        ],
        "{text}"
    );
    assert_eq!(
        series(&text, "safesync_lock_held_seconds_count"),
        [format!(
            r#"safesync_lock_held_seconds_count{{kind="advisory"}} {acquired}"#
        )],
        "{text}"
    );
    let held_sum: f64 = series(&text, "safesync_lock_held_seconds_sum")[0]
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(held_sum >= 0.1, "held for the 100 ms slept: {text}");
    assert_eq!(series(&text, "safesync_lock_lost_total"), lost, "{text}");
    t.cleanup().await;
}

on_every_backend!(
    a_known_workload_gives_exact_counts,
    a_clashing_registry_fails_registration_but_never_a_database_call,
    named_locks_count_acquires_held_time_and_losses,
);

/// Only this test writes to `default_ledger` in this process, so its counts
/// on the shared default registry are exact.
#[tokio::test]
async fn a_db_without_explicit_metrics_records_on_the_default_registry() {
    #[derive(Debug, Clone, Versioned)]
    #[safesync(table = "default_ledger")]
    struct DefaultLedger {
        #[safesync(key)]
        id: i64,
        #[safesync(version)]
        version: i64,
    }

    spans::recorder();
    let t = TestDb::new(Backend::Sqlite).await;
    t.exec("CREATE TABLE default_ledger (id BIGINT PRIMARY KEY, version BIGINT NOT NULL)")
        .await;
    let mut tx = t.db.begin().await.unwrap();
    for id in 1..=2 {
        DefaultLedger { id, version: 0 }
            .insert(&mut tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let text = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap();
    let line = r#"safesync_db_write_total{op="insert",outcome="ok",table="default_ledger"} 2"#;
    assert!(text.lines().any(|l| l == line), "{text}");
    t.cleanup().await;
}

mod spans {
    //! A subscriber that keeps each span's name, parent and fields. It is
    //! the global default of this test binary, installed before any span
    //! is made: a thread-local one would race with the other tests'
    //! threads over tracing's per-callsite interest cache.

    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Debug, Clone)]
    pub(crate) struct SpanData {
        pub(crate) name: &'static str,
        pub(crate) parent: Option<u64>,
        pub(crate) fields: String,
    }

    #[derive(Default)]
    pub(crate) struct Recorder {
        next: AtomicU64,
        pub(crate) spans: Mutex<HashMap<u64, SpanData>>,
    }

    thread_local! {
        /// Spans entered on this thread, innermost last.
        static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    static RECORDER: OnceLock<&'static Recorder> = OnceLock::new();

    /// The recorder, installed as the global subscriber on first call.
    pub(crate) fn recorder() -> &'static Recorder {
        RECORDER.get_or_init(|| {
            let recorder: &'static Recorder = Box::leak(Box::default());
            tracing::subscriber::set_global_default(Forward(recorder))
                .expect("no other global subscriber in this test binary");
            recorder
        })
    }

    struct Forward(&'static Recorder);

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, "{}={value} ", field.name());
        }
    }

    impl Subscriber for Forward {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
            let parent = if attrs.is_root() {
                None
            } else if let Some(p) = attrs.parent() {
                Some(p.into_u64())
            } else {
                STACK.with(|s| s.borrow().last().copied())
            };
            let mut fields = String::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.spans.lock().unwrap().insert(
                id,
                SpanData {
                    name: attrs.metadata().name(),
                    parent,
                    fields,
                },
            );
            Id::from_u64(id)
        }

        fn record(&self, span: &Id, values: &Record<'_>) {
            if let Some(s) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
                values.record(&mut Fields(&mut s.fields));
            }
        }

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, _: &Event<'_>) {}

        fn enter(&self, span: &Id) {
            STACK.with(|s| s.borrow_mut().push(span.into_u64()));
        }

        fn exit(&self, span: &Id) {
            STACK.with(|s| {
                let mut s = s.borrow_mut();
                if let Some(i) = s.iter().rposition(|x| *x == span.into_u64()) {
                    s.remove(i);
                }
            });
        }
    }
}

/// Spans of the other tests land in the same recorder; this one's rows
/// have a key (`7_007`) that no other test uses.
#[tokio::test]
async fn spans_nest_transaction_retry_attempt_record_and_lock() {
    let recorder = spans::recorder();
    let t = TestDb::new(Backend::Sqlite).await;
    t.exec(LEDGER).await;
    t.db.retry(RetryPolicy::default(), |tx| {
        Box::pin(async move {
            row(7_007).insert(tx).await?;
            let mut r = Ledger::lock(tx, &7_007)
                .await?
                .ok_or_else(Error::not_found)?;
            r.amount = 1;
            r.update(tx).await
        })
    })
    .await
    .unwrap();
    t.cleanup().await;

    let spans = recorder.spans.lock().unwrap().clone();
    let chain = |name: &str, fields: &str| -> Vec<&'static str> {
        let (mut id, _) = spans
            .iter()
            .find(|(_, s)| s.name == name && s.fields.contains(fields))
            .unwrap_or_else(|| panic!("no span {name} with {fields}: {spans:#?}"));
        let mut names = Vec::new();
        while let Some(s) = spans.get(id) {
            names.push(s.name);
            match &s.parent {
                Some(p) => id = p,
                None => break,
            }
        }
        names
    };
    assert_eq!(
        chain("safesync.record", "op=insert key=7007 outcome=ok"),
        [
            "safesync.record",
            "safesync.transaction",
            "safesync.retry.attempt"
        ]
    );
    assert_eq!(
        chain(
            "safesync.record",
            "table=ledger op=update key=7007 outcome=ok"
        ),
        [
            "safesync.record",
            "safesync.transaction",
            "safesync.retry.attempt"
        ]
    );
    assert_eq!(
        chain(
            "safesync.lock.acquire",
            "kind=row table=ledger key=7007 outcome=acquired"
        ),
        [
            "safesync.lock.acquire",
            "safesync.transaction",
            "safesync.retry.attempt"
        ]
    );
    assert!(
        spans
            .values()
            .any(|s| s.name == "safesync.retry.attempt" && s.fields.contains("attempt=1")),
        "{spans:#?}"
    );
    assert!(
        spans
            .values()
            .any(|s| s.name == "safesync.transaction" && s.fields.contains("outcome=committed")),
        "{spans:#?}"
    );
}
