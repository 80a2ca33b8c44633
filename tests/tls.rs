//! TLS to every server (feature `tls`), against private servers that speak
//! only TLS, started by each test on free loopback ports with a CA and
//! server certificate the test makes with `openssl` (tests/common/tls.rs):
//! PostgreSQL (`hostssl` only), MariaDB (`require_secure_transport`) and
//! Redis (`--port 0`).
//!
//! For each: a connection that verifies the server against the CA works and
//! is encrypted; record operations run over it; the queue worker consumes
//! a message from TLS Redis into a database reached over TLS; and a CA that
//! did not sign the server's certificate is refused with
//! [`Error::TlsNotTrusted`], whose message says the certificate is not
//! trusted. A missing `openssl`, `initdb`, `mariadbd` or `redis-server`
//! fails these tests.

#![allow(clippy::manual_assert)]

mod common;

use std::time::{Duration, Instant};

use common::tls::{Certs, TlsMariaDb, TlsPostgres, TlsRedis};
use safesync::prelude::*;
use safesync::{CancellationToken, Stream, Worker};

#[derive(Debug, Clone, PartialEq, Versioned)]
#[safesync(table = "tls_orders")]
struct Order {
    #[safesync(key)]
    id: i64,
    status: String,
    #[safesync(version)]
    version: i64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

/// Marks the order paid: a versioned read-modify-write in the handler's
/// transaction, recorded in the ledger with it.
#[safesync::queue_handler(stream = "tls-orders", group = "billing")]
async fn pay(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
    let mut order = Order::find(tx, &msg.order_id)
        .await?
        .ok_or_else(Error::not_found)?;
    order.status = "paid".into();
    order.update(tx).await
}

/// The TLS protocol version of one connection of `db`, as the server sees it
/// (empty or absent: not encrypted).
async fn server_side_tls_version(db: &Db) -> String {
    let sql = match db.dialect() {
        safesync::Dialect::Postgres => {
            "SELECT COALESCE(MAX(version), '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        }
        _ => {
            "SELECT COALESCE(MAX(VARIABLE_VALUE), '') FROM information_schema.SESSION_STATUS \
             WHERE VARIABLE_NAME = 'SSL_VERSION'"
        }
    };
    db.fetch_one::<String>(sql, ()).await.unwrap()
}

/// Connects through `url` (which verifies the server against the right CA),
/// checks the connection is encrypted, and runs record operations over it.
async fn records_over_tls(url: &str) -> Db {
    let db = Db::connect(url)
        .await
        .unwrap_or_else(|e| panic!("verified TLS connection: {e}"));
    let version = server_side_tls_version(&db).await;
    assert!(version.starts_with("TLSv1."), "not encrypted: `{version}`");

    db.create_table::<Order>().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    Order {
        id: 1,
        status: "new".into(),
        version: 0,
    }
    .insert(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let mut order = Order::find(&mut tx, &1).await.unwrap().unwrap();
    order.status = "packed".into();
    order.update(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let read = Order::find(&mut tx, &1).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        read,
        Order {
            id: 1,
            status: "packed".into(),
            version: 1
        }
    );
    db
}

/// `err` is the refusal of a certificate: the variant and its words.
fn assert_not_trusted(err: &Error, target: &str) {
    let shown = err.to_string();
    assert!(matches!(err, Error::TlsNotTrusted { .. }), "{shown}");
    assert!(
        shown.contains(
            "the server's TLS certificate is not trusted: it is not signed by a trusted CA"
        ),
        "{shown}"
    );
    assert!(shown.contains(target), "{shown}");
}

/// A database URL with the wrong CA is refused as untrusted, fast.
async fn wrong_ca_is_refused(url: &str, target: &str) {
    let started = Instant::now();
    let Err(err) = Db::connect(url).await else {
        panic!("the wrong CA was accepted: {url}");
    };
    assert_not_trusted(&err, target);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The worker consumes one message from TLS Redis into `db` (itself over
/// TLS), exactly once.
async fn worker_over_tls(db: &Db, redis: &safesync::queue::Redis) {
    db.execute("INSERT INTO tls_orders (id, status, version) VALUES (7, 'new', 0)")
        .await
        .unwrap();
    pay::stream()
        .send(redis, &OrderPlaced { order_id: 7 })
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db.clone(), redis.clone())
            .handle(pay)
            .block(Duration::from_millis(200))
            .run(stop.clone()),
    );
    let started = Instant::now();
    loop {
        let mut tx = db.begin().await.unwrap();
        let order = Order::find(&mut tx, &7).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        if order.status == "paid" {
            assert_eq!(order.version, 1);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker did not consume the message over TLS: {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let summary = worker.await.unwrap().unwrap();
    assert_eq!(
        (summary.processed, summary.acked, summary.failed),
        (1, 1, 0),
        "{summary:?}"
    );
    let health = safesync::queue::health(redis, "tls-orders", "billing")
        .await
        .unwrap();
    assert_eq!(health.pending, 0, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_verify_full_records_and_a_wrong_ca() {
    let certs = Certs::generate();
    let pg = TlsPostgres::start(&certs);
    // The server takes TLS only: without it the login is refused.
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    );
    assert!(
        Db::connect(&plain).await.is_err(),
        "the private server accepted plain text"
    );

    let db = records_over_tls(&pg.url(&certs.ca())).await;
    db.close().await;
    wrong_ca_is_refused(
        &pg.url(&certs.wrong_ca()),
        &format!("127.0.0.1:{}", pg.port),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_verify_identity_records_and_a_wrong_ca() {
    let certs = Certs::generate();
    let my = TlsMariaDb::start(&certs);
    let plain = format!(
        "mysql://tls:tls-secret@127.0.0.1:{}/test?ssl-mode=DISABLED",
        my.port
    );
    assert!(
        Db::connect(&plain).await.is_err(),
        "the private server accepted plain text"
    );

    let db = records_over_tls(&my.url(&certs.ca())).await;
    db.close().await;
    let err_url = my.url(&certs.wrong_ca());
    wrong_ca_is_refused(&err_url, &format!("127.0.0.1:{}", my.port)).await;
    // The password never shows in the refusal.
    let Err(err) = Db::connect(&err_url).await else {
        panic!("the wrong CA was accepted");
    };
    assert!(!err.to_string().contains("tls-secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_with_its_ca_and_a_wrong_ca() {
    let certs = Certs::generate();
    let redis = TlsRedis::start(&certs);
    let target = format!("Redis at 127.0.0.1:{}", redis.port);
    let orders: Stream<OrderPlaced> = Stream::new("tls-check");

    let client = safesync::queue::client_tls(&redis.url(), certs.ca()).unwrap();
    orders
        .send(&client, &OrderPlaced { order_id: 1 })
        .await
        .unwrap();
    // The client serves the program's own connections too.
    let mut conn = client
        .node_client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let length: u64 = safesync::redis::cmd("XLEN")
        .arg("tls-check")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(length, 1);

    // Another CA, or the public web roots of a plain `rediss://` client,
    // do not trust the private CA's certificate.
    let wrong = safesync::queue::client_tls(&redis.url(), certs.wrong_ca()).unwrap();
    let err = orders
        .send(&wrong, &OrderPlaced { order_id: 2 })
        .await
        .unwrap_err();
    assert_not_trusted(&err, &target);
    let public_roots = safesync::queue::client(&redis.url()).unwrap();
    let err = orders
        .send(&public_roots, &OrderPlaced { order_id: 2 })
        .await
        .unwrap_err();
    assert_not_trusted(&err, &target);
    // A worker with the wrong CA stops at once with the same error.
    let t = common::TestDb::new(common::Backend::Sqlite).await;
    let err = Worker::new(t.db.clone(), wrong)
        .handle(pay)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert_not_trusted(&err, &target);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_on_tls_redis_and_tls_postgres() {
    let certs = Certs::generate();
    let redis = TlsRedis::start(&certs);
    let pg = TlsPostgres::start(&certs);
    let db = records_over_tls(&pg.url(&certs.ca())).await;
    let client = safesync::queue::client_tls(&redis.url(), certs.ca()).unwrap();
    worker_over_tls(&db, &client).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_on_tls_redis_and_tls_mariadb() {
    let certs = Certs::generate();
    let redis = TlsRedis::start(&certs);
    let my = TlsMariaDb::start(&certs);
    let db = records_over_tls(&my.url(&certs.ca())).await;
    let client = safesync::queue::client_tls(&redis.url(), certs.ca()).unwrap();
    worker_over_tls(&db, &client).await;
    db.close().await;
}
