//! `db.create_table::<T>()` and `db.check_table::<T>()` on SQLite,
//! MySQL/MariaDB and PostgreSQL: the table made from the struct works for
//! every record operation, and every kind of mismatch is reported, all at
//! once.

#![allow(clippy::items_after_statements)]

mod common;

use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::{Mismatch, sqlx};

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

fn acct(id: i64, balance: i64) -> Account {
    Account {
        id,
        owner: format!("owner{id}"),
        balance,
        version: 0,
    }
}

/// The mismatches of a `check_table` that must fail.
fn mismatches(result: Result<(), Error>) -> Vec<Mismatch> {
    match result {
        Err(Error::Schema { mismatches, .. }) => mismatches,
        other => panic!("expected Error::Schema, got {other:?}"),
    }
}

async fn create_table_then_insert_find_update_delete(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.db.create_table::<Account>().await.unwrap();
    // IF NOT EXISTS: a second call (a restart) leaves the table alone.
    t.db.create_table::<Account>().await.unwrap();
    t.db.check_table::<Account>().await.unwrap();

    let mut tx = t.db.begin().await.unwrap();
    acct(1, 100).insert(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = t.db.begin().await.unwrap();
    let mut a = Account::find(&mut tx, &1).await.unwrap().unwrap();
    assert_eq!(a, acct(1, 100));
    a.balance = 150;
    a.update(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    // The key is the primary key: a duplicate is recognised.
    let mut tx = t.db.begin().await.unwrap();
    assert_eq!(
        acct(1, 0).insert_idempotent(&mut tx).await.unwrap(),
        Inserted::AlreadyExists
    );
    assert!(matches!(
        acct(1, 0).insert(&mut tx).await,
        Err(Error::Duplicate { .. })
    ));
    drop(tx);

    // A stale update is a conflict: the version column works.
    let mut stale = acct(1, 100);
    let mut tx = t.db.begin().await.unwrap();
    assert!(matches!(
        stale.update(&mut tx).await,
        Err(Error::Conflict {
            expected: 0,
            actual: 1,
            ..
        })
    ));
    drop(tx);

    let mut tx = t.db.begin().await.unwrap();
    let a = Account::find(&mut tx, &1).await.unwrap().unwrap();
    assert_eq!((a.balance, a.version), (150, 1));
    a.delete(&mut tx).await.unwrap();
    assert!(Account::find(&mut tx, &1).await.unwrap().is_none());
    tx.commit().await.unwrap();
    t.cleanup().await;
}

/// Every supported field type, a composite key, a nullable field and an
/// `i32` version, in a named schema.
#[derive(Debug, Clone, PartialEq, Versioned)]
#[safesync(table = "members", schema = "ss_schema_test")]
struct Member {
    #[safesync(key)]
    org: String,
    #[safesync(key)]
    user_id: i64,
    #[safesync(column = "member_role")]
    role: i16,
    seats: i32,
    active: bool,
    score: f64,
    ratio: f32,
    avatar: Vec<u8>,
    nickname: Option<String>,
    #[safesync(skip)]
    cache: u8,
    #[safesync(version)]
    version: i32,
}

fn member(org: &str, user_id: i64) -> Member {
    Member {
        org: org.into(),
        user_id,
        role: 2,
        seats: 40_000,
        active: true,
        score: 0.25,
        ratio: 1.5,
        avatar: vec![0, 1, 255],
        nickname: None,
        cache: 0,
        version: 0,
    }
}

/// A `Db` on the test database where the schema `ss_schema_test` exists
/// and holds no `members` table.
async fn with_schema(t: &TestDb) -> Db {
    match t.backend {
        Backend::Sqlite => {
            // On SQLite a schema is an attached database, on every connection.
            let dir = t.namespace().trim_start_matches("sqlite:").to_owned();
            let attached = format!("{dir}.ss_schema_test");
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .after_connect(move |conn, _| {
                    let attached = attached.clone();
                    Box::pin(async move {
                        sqlx::query("ATTACH DATABASE ? AS ss_schema_test")
                            .bind(attached)
                            .execute(conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(
                    t.namespace()
                        .parse::<sqlx::sqlite::SqliteConnectOptions>()
                        .unwrap()
                        .create_if_missing(true),
                )
                .await
                .unwrap();
            Db::from_sqlite_pool(pool)
        }
        Backend::MySql => {
            t.exec("CREATE DATABASE IF NOT EXISTS ss_schema_test").await;
            t.exec("DROP TABLE IF EXISTS ss_schema_test.members").await;
            t.db.clone()
        }
        Backend::Postgres => {
            t.exec("CREATE SCHEMA IF NOT EXISTS ss_schema_test").await;
            t.exec("DROP TABLE IF EXISTS ss_schema_test.members").await;
            t.db.clone()
        }
    }
}

async fn create_table_with_a_schema_a_composite_key_and_every_type(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = with_schema(&t).await;
    assert!(matches!(
        mismatches(db.check_table::<Member>().await).as_slice(),
        [Mismatch::MissingTable]
    ));
    db.create_table::<Member>().await.unwrap();
    db.check_table::<Member>().await.unwrap();

    let mut tx = db.begin().await.unwrap();
    member("acme", 1).insert(&mut tx).await.unwrap();
    member("acme", 2).insert(&mut tx).await.unwrap();
    assert_eq!(
        member("acme", 1).insert_idempotent(&mut tx).await.unwrap(),
        Inserted::AlreadyExists
    );
    tx.commit().await.unwrap();

    let mut tx = db.begin().await.unwrap();
    let mut m = Member::find(&mut tx, &("acme".to_owned(), 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m, member("acme", 2));
    m.nickname = Some("ada".into());
    m.avatar = vec![9; 300];
    m.update(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.begin().await.unwrap();
    let m = Member::find(&mut tx, &("acme".to_owned(), 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.nickname.as_deref(), m.avatar.len(), m.version),
        (Some("ada"), 300, 1)
    );
    tx.commit().await.unwrap();

    if backend != Backend::Sqlite {
        db.execute("DROP TABLE ss_schema_test.members")
            .await
            .unwrap();
    }
    db.close().await;
    t.cleanup().await;
}

async fn check_table_lists_every_mismatch_at_once(backend: Backend) {
    let t = TestDb::new(backend).await;
    assert!(matches!(
        mismatches(t.db.check_table::<Account>().await).as_slice(),
        [Mismatch::MissingTable]
    ));
    // No `owner`, a TEXT balance, a nullable version, and no unique key.
    t.exec("CREATE TABLE accounts (id BIGINT NOT NULL, balance TEXT NOT NULL, version BIGINT, extra INT)")
        .await;
    let err = t.db.check_table::<Account>().await.unwrap_err();
    let text = err.to_string();
    let found = mismatches(Err(err));
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        matches!(&found[0], Mismatch::MissingColumn { column: "owner", field, .. } if field == "owner: String"),
        "{found:?}"
    );
    assert!(
        matches!(&found[1], Mismatch::WrongType { column: "balance", found, .. } if found.eq_ignore_ascii_case("text")),
        "{found:?}"
    );
    assert!(
        matches!(&found[2], Mismatch::Nullable { column: "version", field } if field == "version: i64"),
        "{found:?}"
    );
    assert_eq!(
        found[3],
        Mismatch::KeyNotUnique {
            columns: vec!["id"]
        }
    );
    assert!(
        text.starts_with(
            "table `accounts` does not match struct `Account`: column `owner` is missing"
        ),
        "{text}"
    );
    t.cleanup().await;
}

async fn a_unique_index_on_the_key_is_enough_but_a_wider_one_is_not(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec(
        "CREATE TABLE accounts (n BIGINT NOT NULL PRIMARY KEY, id BIGINT NOT NULL, \
         owner VARCHAR(64) NOT NULL, balance BIGINT NOT NULL, version BIGINT NOT NULL)",
    )
    .await;
    t.exec("CREATE UNIQUE INDEX accounts_id_owner ON accounts (id, owner)")
        .await;
    assert_eq!(
        mismatches(t.db.check_table::<Account>().await),
        vec![Mismatch::KeyNotUnique {
            columns: vec!["id"]
        }]
    );
    t.exec("CREATE UNIQUE INDEX accounts_id ON accounts (id)")
        .await;
    t.db.check_table::<Account>().await.unwrap();
    t.cleanup().await;
}

async fn a_column_too_narrow_or_nullable_for_its_field_is_a_mismatch(backend: Backend) {
    let t = TestDb::new(backend).await;
    // `owner` may be NULL, `balance` is a 32-bit INT for an i64 field (on
    // SQLite every INT is 64 bits, so only the NULL is wrong there).
    t.exec(
        "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, owner VARCHAR(64), \
         balance INT NOT NULL, version BIGINT NOT NULL)",
    )
    .await;
    let found = mismatches(t.db.check_table::<Account>().await);
    assert_eq!(
        found[0],
        Mismatch::Nullable {
            column: "owner",
            field: "owner: String".into(),
        }
    );
    if backend == Backend::Sqlite {
        assert_eq!(found.len(), 1, "{found:?}");
    } else {
        // MariaDB spells it `int(11)`, MySQL 8 `int`, PostgreSQL `integer`.
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            matches!(&found[1], Mismatch::WrongType { column: "balance", field, found, expected: "BIGINT" }
                if field == "balance: i64" && found.starts_with("int")),
            "{found:?}"
        );
    }
    t.cleanup().await;
}

async fn a_primary_key_column_is_not_null_only_where_the_backend_makes_it_so(backend: Backend) {
    let t = TestDb::new(backend).await;
    // PRIMARY KEY implies NOT NULL on MySQL and PostgreSQL, and on SQLite
    // for the rowid (`INTEGER PRIMARY KEY`) only.
    t.exec(if backend == Backend::Sqlite {
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
         balance BIGINT NOT NULL, version BIGINT NOT NULL)"
    } else {
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
         balance BIGINT NOT NULL, version BIGINT NOT NULL)"
    })
    .await;
    t.db.check_table::<Account>().await.unwrap();
    if backend == Backend::Sqlite {
        // Any other SQLite primary key column takes NULL unless told not to.
        t.exec("DROP TABLE accounts").await;
        t.exec(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
             balance BIGINT NOT NULL, version BIGINT NOT NULL)",
        )
        .await;
        assert_eq!(
            mismatches(t.db.check_table::<Account>().await),
            vec![Mismatch::Nullable {
                column: "id",
                field: "id: i64".into()
            }]
        );
    }
    t.cleanup().await;
}

on_every_backend!(
    a_primary_key_column_is_not_null_only_where_the_backend_makes_it_so,
    create_table_then_insert_find_update_delete,
    create_table_with_a_schema_a_composite_key_and_every_type,
    check_table_lists_every_mismatch_at_once,
    a_unique_index_on_the_key_is_enough_but_a_wider_one_is_not,
    a_column_too_narrow_or_nullable_for_its_field_is_a_mismatch,
);
