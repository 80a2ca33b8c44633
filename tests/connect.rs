//! `Db::connect` fails fast, with the cause, and never shows the password.

mod common;

use std::time::{Duration, Instant};

use safesync::prelude::*;

const SECRET: &str = "s3cr3t-Pw";

/// A local port with nothing listening on it.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Connects to `url`, expecting `Error::Connect` (or, for a refused
/// certificate, `Error::TlsNotTrusted`) within 2 s whose message
/// contains `cause` (case-insensitive) and no password.
async fn fails_fast_with(url: &str, cause: &str) {
    let start = Instant::now();
    let result = Db::connect(url).await;
    let took = start.elapsed();
    let Err(err) = result else {
        panic!("{url} connected")
    };
    let shown = format!("{err} / {err:?}");
    assert!(
        matches!(err, Error::Connect { .. } | Error::TlsNotTrusted { .. }),
        "{shown}"
    );
    assert!(
        shown.to_lowercase().contains(&cause.to_lowercase()),
        "expected `{cause}` in: {shown}"
    );
    assert!(!shown.contains(SECRET), "password leaked: {shown}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {shown}");
    println!("{took:?}: {err}");
}

#[tokio::test]
async fn refused_connection_fails_fast_with_the_cause_mysql() {
    let port = free_port();
    let url = format!("mysql://safesync:{SECRET}@127.0.0.1:{port}/safesync");
    fails_fast_with(&url, "connection refused").await;
    fails_fast_with(&url, ":***@127.0.0.1").await;
}

#[tokio::test]
async fn refused_connection_fails_fast_with_the_cause_postgres() {
    let port = free_port();
    let url = format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/test");
    fails_fast_with(&url, "connection refused").await;
}

#[tokio::test]
async fn unresolvable_host_fails_fast_with_the_cause_mysql() {
    let url = format!("mysql://safesync:{SECRET}@no-such-host.invalid:3306/safesync");
    fails_fast_with(&url, "failed to lookup address").await;
}

#[tokio::test]
async fn unresolvable_host_fails_fast_with_the_cause_postgres() {
    let url = format!("postgres://postgres:{SECRET}@no-such-host.invalid:5432/test");
    fails_fast_with(&url, "failed to lookup address").await;
}

/// The shared server's URL with `user:password` in place of its own.
fn with_login(url: &str, login: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{login}@{host}")
}

#[tokio::test]
async fn wrong_password_fails_fast_with_the_cause_mysql() {
    let url = with_login(&common::mysql_url(), &format!("safesync:{SECRET}"));
    fails_fast_with(&url, "access denied for user 'safesync'").await;
}

#[tokio::test]
async fn unknown_role_fails_fast_with_the_cause_postgres() {
    // The server trusts local logins, so any password passes: an unknown
    // role is the refused login here.
    let url = with_login(&common::pg_url(), &format!("no_such_role:{SECRET}"));
    fails_fast_with(&url, "role \"no_such_role\" does not exist").await;
}

#[tokio::test]
async fn required_tls_that_cannot_be_had_fails_fast_with_the_cause() {
    let mysql = with_login(&common::mysql_url(), &format!("safesync:{SECRET}"));
    fails_fast_with(&format!("{mysql}?ssl-mode=required"), "TLS").await;
    let pg = with_login(&common::pg_url(), &format!("postgres:{SECRET}"));
    // With the feature `tls` the shared PostgreSQL may offer TLS with a
    // certificate no CA here signed: verify-full cannot have it either.
    fails_fast_with(&format!("{pg}?sslmode=verify-full"), "TLS").await;
}

#[tokio::test]
async fn sqlite_file_in_a_missing_directory_fails_fast_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("app.db");
    let url = format!("sqlite:{}", path.display());
    fails_fast_with(&url, "unable to open database file").await;
    fails_fast_with(&url, "no-such-dir").await;
}

#[tokio::test]
async fn a_reachable_server_still_connects() {
    for url in [common::mysql_url(), common::pg_url()] {
        let db = Db::connect(&url).await.unwrap();
        assert_eq!(
            db.fetch_one::<i64>("SELECT 1 + ?", (1_i64,)).await.unwrap(),
            2
        );
        db.close().await;
    }
}

#[tokio::test]
async fn a_server_that_never_answers_fails_after_the_connect_timeout() {
    // Accepted by the kernel's backlog, never answered: the handshake waits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    for url in [
        format!("mysql://safesync:{SECRET}@127.0.0.1:{port}/safesync"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/test"),
    ] {
        let start = Instant::now();
        let err = Db::connect(&url).await.expect_err("connected");
        let took = start.elapsed();
        let shown = format!("{err}");
        assert!(
            shown.contains("within the connect timeout of 1s"),
            "{shown}"
        );
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(2),
            "{took:?}"
        );

        let start = Instant::now();
        let options = DbOptions::default().connect_timeout(Duration::from_millis(300));
        let err = Db::connect_with(&url, options)
            .await
            .expect_err("connected");
        let took = start.elapsed();
        assert!(err.to_string().contains("of 300ms"), "{err}");
        assert!(took < Duration::from_millis(800), "{took:?}");
    }
    drop(silent);
}
