//! Statements with bound values, scalar queries, record queries and
//! `find_many` on SQLite, MySQL/MariaDB and PostgreSQL.

#![allow(clippy::items_after_statements)]

mod common;

use common::{Backend, TestDb};
use safesync::prelude::*;

#[derive(Debug, Clone, PartialEq, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    owner: String,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

/// A composite key, a renamed column and a skipped field.
#[derive(Debug, Clone, PartialEq, Locked)]
#[safesync(table = "members")]
struct Member {
    #[safesync(key)]
    org: i64,
    #[safesync(key)]
    user_id: i64,
    #[safesync(column = "member_role")]
    role: String,
    #[safesync(skip)]
    cached: Option<String>,
}

// The table's columns are deliberately in another order than the struct's
// fields: record queries must decode by the record's columns, not by `*`.
const ACCOUNTS: &str = "CREATE TABLE accounts (balance BIGINT NOT NULL, version BIGINT NOT NULL, \
     owner VARCHAR(64) NOT NULL, id BIGINT PRIMARY KEY)";
const MEMBERS: &str = "CREATE TABLE members (member_role VARCHAR(16) NOT NULL, user_id BIGINT NOT NULL, \
     org BIGINT NOT NULL, PRIMARY KEY (org, user_id))";

fn acct(id: i64, owner: &str, balance: i64) -> Account {
    Account {
        id,
        owner: owner.to_owned(),
        balance,
        version: 0,
    }
}

async fn setup(backend: Backend) -> TestDb {
    let t = TestDb::new(backend).await;
    t.exec(ACCOUNTS).await;
    t.exec(MEMBERS).await;
    let mut tx = t.db.begin().await.unwrap();
    for (id, owner, balance) in [(1, "ada", 50), (2, "bob", 0), (3, "cy", 70), (4, "dee", 5)] {
        tx.execute_with(
            "INSERT INTO accounts (id, owner, balance, version) VALUES (?, ?, ?, 0)",
            (id, owner, balance),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    t
}

fn ids(accounts: &[Account]) -> Vec<i64> {
    accounts.iter().map(|a| a.id).collect()
}

async fn statements_bind_values_and_queries_decode_records(backend: Backend) {
    let t = setup(backend).await;
    let mut tx = t.db.begin().await.unwrap();

    let changed = tx
        .execute_with(
            "UPDATE accounts SET balance = balance + ? WHERE owner = ? OR id = ?",
            (10_i64, "bob", 4_i64),
        )
        .await
        .unwrap();
    assert_eq!(changed, 2);

    let rich = Account::select_all(&mut tx, "WHERE balance > ? ORDER BY id", (9_i64,))
        .await
        .unwrap();
    assert_eq!(
        rich,
        [
            acct(1, "ada", 50),
            acct(2, "bob", 10),
            acct(3, "cy", 70),
            acct(4, "dee", 15)
        ]
    );
    let all = Account::select_all(&mut tx, "", ()).await.unwrap();
    assert_eq!(all.len(), 4);
    let top = Account::select_optional(&mut tx, "ORDER BY balance DESC", ())
        .await
        .unwrap();
    assert_eq!(top, Some(acct(3, "cy", 70)));
    assert_eq!(
        Account::select_optional(&mut tx, "WHERE owner = ?", ("nobody",))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        Account::select_one(&mut tx, "WHERE owner = ?", ("dee",))
            .await
            .unwrap(),
        acct(4, "dee", 15)
    );
    let err = Account::select_one(&mut tx, "WHERE owner = ?", ("nobody",))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NotFound {
                table: Some("accounts"),
                ..
            }
        ),
        "{err:?}"
    );

    tx.commit().await.unwrap();
    t.cleanup().await;
}

async fn scalar_queries_decode_the_first_column(backend: Backend) {
    let t = setup(backend).await;
    let mut tx = t.db.begin().await.unwrap();
    let n: i64 = tx
        .fetch_one("SELECT COUNT(*) FROM accounts WHERE balance >= ?", (5_i64,))
        .await
        .unwrap();
    assert_eq!(n, 3);
    let owner = tx
        .fetch_optional::<String>("SELECT owner FROM accounts WHERE id = ?", (3_i64,))
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some("cy"));
    assert_eq!(
        tx.fetch_optional::<String>("SELECT owner FROM accounts WHERE id = ?", (99_i64,))
            .await
            .unwrap(),
        None
    );
    let err = tx
        .fetch_one::<i64>("SELECT id FROM accounts WHERE id = ?", (99_i64,))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let owners = tx
        .fetch_all::<String>(
            "SELECT owner FROM accounts WHERE id <> ? ORDER BY id",
            (2_i64,),
        )
        .await
        .unwrap();
    assert_eq!(owners, ["ada", "cy", "dee"]);
    // NULL binds as `None`.
    let none: Option<i64> = None;
    let n: i64 = tx
        .fetch_one(
            "SELECT COUNT(*) FROM accounts WHERE balance = COALESCE(?, 70)",
            (none,),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // A decode into the wrong type is an error naming the statement.
    let err = tx
        .fetch_one::<i64>("SELECT owner FROM accounts WHERE id = ?", (1_i64,))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Decode { what, .. } if what.contains("SELECT owner FROM accounts")),
        "{err:?}"
    );
    tx.commit().await.unwrap();

    // The same outside a transaction you hold.
    assert_eq!(
        t.db.execute_with("DELETE FROM accounts WHERE id = ?", (4_i64,))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        t.db.fetch_one::<i64>("SELECT COUNT(*) FROM accounts", ())
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        t.db.fetch_all::<i64>("SELECT id FROM accounts WHERE id > ? ORDER BY id", (1_i64,))
            .await
            .unwrap(),
        [2, 3]
    );
    assert_eq!(
        t.db.fetch_optional::<i64>("SELECT id FROM accounts WHERE id = ?", (4_i64,))
            .await
            .unwrap(),
        None
    );
    t.cleanup().await;
}

async fn an_injection_attempt_stays_a_value(backend: Backend) {
    let t = setup(backend).await;
    let evil = [
        "x'); DROP TABLE accounts; --",
        "' OR '1'='1",
        "\\'; DELETE FROM accounts; -- ",
        "$1 ? $$ ?",
    ];
    let mut tx = t.db.begin().await.unwrap();
    for (i, owner) in (10_i64..).zip(evil) {
        acct(i, owner, 1).insert(&mut tx).await.unwrap();
        let n = tx
            .execute_with("UPDATE accounts SET owner = ? WHERE id = ?", (owner, i))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    tx.commit().await.unwrap();

    let mut tx = t.db.begin().await.unwrap();
    // Every row is still there, each evil text stored exactly.
    assert_eq!(
        tx.fetch_one::<i64>("SELECT COUNT(*) FROM accounts", ())
            .await
            .unwrap(),
        8
    );
    for owner in evil {
        let found = Account::select_all(&mut tx, "WHERE owner = ?", (owner,))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{owner}");
        assert_eq!(found[0].owner, owner);
    }
    // `' OR '1'='1` as a value matches its own row only, not every row.
    let n: i64 = tx
        .fetch_one(
            "SELECT COUNT(*) FROM accounts WHERE owner = ? OR owner = 'nobody'",
            ("' OR '1'='1",),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
    t.cleanup().await;
}

async fn a_wrong_number_of_values_is_an_error_naming_the_statement(backend: Backend) {
    let t = setup(backend).await;
    let mut tx = t.db.begin().await.unwrap();
    let sql = "UPDATE accounts SET balance = ? WHERE id = ?";
    let err = tx.execute_with(sql, (1_i64,)).await.unwrap_err();
    match &err {
        Error::Query { sql: s, reason } => {
            assert_eq!(s, sql);
            assert_eq!(
                reason,
                "it has 2 `?` placeholder(s) but 1 value(s) were bound"
            );
        }
        other => panic!("expected Error::Query, got {other:?}"),
    }
    assert!(err.to_string().contains(sql), "{err}");
    let err = tx
        .fetch_one::<i64>("SELECT COUNT(*) FROM accounts", (1_i64, 2_i64))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Query { reason, .. } if reason.contains("0 `?` placeholder(s) but 2 value(s)")),
        "{err:?}"
    );
    let err = Account::select_all(&mut tx, "WHERE id = ? AND owner = ?", (1_i64,))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Query { sql, .. } if sql.contains("FROM") && sql.ends_with("WHERE id = ? AND owner = ?")),
        "{err:?}"
    );
    // Another placeholder spelling is refused, on every backend.
    let err = tx
        .execute_with(
            "UPDATE accounts SET balance = ?1 WHERE id = ?2",
            (1_i64, 1_i64),
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Query { .. }), "{err:?}");
    // Nothing was sent: the transaction is still usable (also on
    // PostgreSQL, where a failed statement would abort it).
    assert_eq!(
        tx.fetch_one::<i64>("SELECT COUNT(*) FROM accounts", ())
            .await
            .unwrap(),
        4
    );
    tx.commit().await.unwrap();
    t.cleanup().await;
}

async fn question_marks_in_literals_and_comments_are_not_placeholders(backend: Backend) {
    let t = setup(backend).await;
    let mut tx = t.db.begin().await.unwrap();
    tx.execute_with(
        "UPDATE accounts SET owner = '?' WHERE id = ? /* why? */",
        (2_i64,),
    )
    .await
    .unwrap();
    let n: i64 = tx
        .fetch_one(
            "SELECT COUNT(*) FROM accounts -- how many?\n WHERE owner = '?' AND id = ?",
            (2_i64,),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
    t.cleanup().await;
}

/// How many statements have read `accounts` in this transaction, where the
/// backend can tell: MariaDB counts the session's SELECTs, PostgreSQL the
/// table's scans in the transaction.
async fn reads_so_far(tx: &mut Tx<'_>, backend: Backend) -> Option<i64> {
    match backend {
        Backend::Sqlite => None,
        Backend::MySql => {
            let conn = tx.as_mysql().unwrap();
            let (_, n): (String, String) =
                safesync::sqlx::query_as("SHOW SESSION STATUS LIKE 'Com_stmt_execute'")
                    .fetch_one(conn)
                    .await
                    .unwrap();
            Some(n.parse().unwrap())
        }
        Backend::Postgres => Some(
            tx.fetch_one::<i64>(
                "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables \
                 WHERE relname = 'accounts' AND schemaname = current_schema()",
                (),
            )
            .await
            .unwrap(),
        ),
    }
}

async fn find_many_reads_every_key_in_one_statement(backend: Backend) {
    let t = setup(backend).await;
    let mut tx = t.db.begin().await.unwrap();
    let before = reads_so_far(&mut tx, backend).await;
    let found = Account::find_many(&mut tx, &[3, 1, 99, 3, 4])
        .await
        .unwrap();
    let after = reads_so_far(&mut tx, backend).await;
    assert_eq!(
        ids(&found),
        [1, 3, 4],
        "key order, absent left out, once each"
    );
    assert_eq!(found[1], acct(3, "cy", 70));
    if let (Some(before), Some(after)) = (before, after) {
        // MariaDB: the find_many and the first SHOW STATUS; PostgreSQL: one scan.
        let expected = if backend == Backend::MySql { 2 } else { 1 };
        assert_eq!(after - before, expected, "statements run by find_many");
    }
    assert!(Account::find_many(&mut tx, &[]).await.unwrap().is_empty());

    // A composite key.
    for (org, user, role) in [(1, 1, "admin"), (1, 2, "dev"), (2, 1, "ops")] {
        Member {
            org,
            user_id: user,
            role: role.into(),
            cached: None,
        }
        .insert(&mut tx)
        .await
        .unwrap();
    }
    let members = Member::find_many(&mut tx, &[(2, 1), (1, 2), (9, 9)])
        .await
        .unwrap();
    let got: Vec<_> = members
        .iter()
        .map(|m| (m.org, m.user_id, m.role.as_str()))
        .collect();
    assert_eq!(got, [(1, 2, "dev"), (2, 1, "ops")]);
    let admins = Member::select_all(&mut tx, "WHERE member_role = ?", ("admin",))
        .await
        .unwrap();
    assert_eq!(
        admins,
        [Member {
            org: 1,
            user_id: 1,
            role: "admin".into(),
            cached: None
        }]
    );

    // 2,000 keys still go in one statement.
    let many: Vec<i64> = (1..=2000).collect();
    assert_eq!(
        ids(&Account::find_many(&mut tx, &many).await.unwrap()),
        [1, 2, 3, 4]
    );
    tx.commit().await.unwrap();
    t.cleanup().await;
}

on_every_backend!(
    statements_bind_values_and_queries_decode_records,
    scalar_queries_decode_the_first_column,
    an_injection_attempt_stays_a_value,
    a_wrong_number_of_values_is_an_error_naming_the_statement,
    question_marks_in_literals_and_comments_are_not_placeholders,
    find_many_reads_every_key_in_one_statement,
);
