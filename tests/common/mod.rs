//! Test support: an isolated database per test on every backend.
//!
//! SQLite gets a file in a fresh temporary directory; MySQL/MariaDB a fresh
//! database; PostgreSQL a fresh schema (set as the connections' `search_path`).
//! Names carry the process id and a counter, so tests run in parallel and
//! re-runs never collide. A server that is not answering fails the test.

#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "queue")]
pub mod cluster;
#[cfg(feature = "queue")]
pub mod faults;
pub mod private_redis;
pub mod processes;
#[cfg(feature = "queue")]
pub mod queue;
pub mod tls;

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use safesync::Db;
use safesync::sqlx;

pub const MYSQL_URL: &str = "mysql://safesync:safesync@127.0.0.1:3306/safesync";
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn mysql_url() -> String {
    std::env::var("SAFESYNC_MYSQL_URL").unwrap_or_else(|_| MYSQL_URL.to_owned())
}

pub fn pg_url() -> String {
    std::env::var("SAFESYNC_PG_URL").unwrap_or_else(|_| PG_URL.to_owned())
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfff
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

/// One test's private database. Call [`TestDb::cleanup`] at the end.
pub struct TestDb {
    pub db: Db,
    pub backend: Backend,
    namespace: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        TestDb::with_pool_size(backend, 10).await
    }

    pub async fn with_pool_size(backend: Backend, max: u32) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("test.db").display());
                let db = Db::connect_with(
                    &url,
                    safesync::DbOptions::default().max_connections(max.min(4)),
                )
                .await
                .unwrap();
                TestDb {
                    db,
                    backend,
                    namespace: url,
                    _dir: Some(dir),
                }
            }
            Backend::MySql => {
                let name = unique("sstest");
                let admin = sqlx::mysql::MySqlConnectOptions::from_str(&mysql_url()).unwrap();
                let mut conn = sqlx::ConnectOptions::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("MySQL/MariaDB at {} is not answering: {e}", mysql_url())
                    });
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(max)
                    .connect_with(admin.database(&name))
                    .await
                    .unwrap();
                TestDb {
                    db: Db::from_mysql_pool(pool),
                    backend,
                    namespace: name,
                    _dir: None,
                }
            }
            Backend::Postgres => {
                let name = unique("sstest");
                let admin = sqlx::postgres::PgConnectOptions::from_str(&pg_url()).unwrap();
                let mut conn = sqlx::ConnectOptions::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {} is not answering: {e}", pg_url()));
                sqlx::Executor::execute(&mut conn, format!("CREATE SCHEMA {name}").as_str())
                    .await
                    .unwrap();
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(max)
                    .connect_with(admin.options([("search_path", name.as_str())]))
                    .await
                    .unwrap();
                TestDb {
                    db: Db::from_pg_pool(pool),
                    backend,
                    namespace: name,
                    _dir: None,
                }
            }
        }
    }

    /// Runs DDL (or any fixed SQL) on the test database.
    pub async fn exec(&self, sql: &str) {
        self.db
            .execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A second, independent pool on the same database (another "process").
    pub async fn other_db(&self) -> Db {
        attach(self.backend, &self.namespace).await
    }

    /// What [`attach`] needs to reach this database from another process.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Drops the test's database or schema.
    pub async fn cleanup(self) {
        self.db.close().await;
        let sql = match self.backend {
            Backend::Sqlite => return,
            Backend::MySql => format!("DROP DATABASE IF EXISTS {}", self.namespace),
            Backend::Postgres => format!("DROP SCHEMA IF EXISTS {} CASCADE", self.namespace),
        };
        let admin = match self.backend {
            Backend::MySql => Db::connect(&mysql_url()).await.unwrap(),
            _ => Db::connect(&pg_url()).await.unwrap(),
        };
        admin.execute(&sql).await.unwrap();
        admin.close().await;
    }
}

/// Stamps out one `#[tokio::test]` per backend for each listed
/// `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name($crate::common::Backend::Sqlite).await } )* }
        mod mysql { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name($crate::common::Backend::MySql).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name($crate::common::Backend::Postgres).await } )* }
    };
}

/// Like `on_every_backend!`, for behaviour that only the servers have (SQLite
/// serialises every transaction on its one write lock).
#[macro_export]
macro_rules! on_servers {
    ($($name:ident),* $(,)?) => {
        mod mysql_only { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name($crate::common::Backend::MySql).await } )* }
        mod postgres_only { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name($crate::common::Backend::Postgres).await } )* }
    };
}

/// Ends the server session `id` (a lock's `session_id`) from outside, the
/// way an operator or a crashed network would: MySQL `KILL`, PostgreSQL
/// `pg_terminate_backend`. `db` is any other connection to the server.
pub async fn kill_session(backend: Backend, db: &Db, id: i64) {
    match backend {
        Backend::MySql => {
            sqlx::query(&format!("KILL {id}"))
                .execute(db.as_mysql().unwrap())
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(i32::try_from(id).unwrap())
                .fetch_one(db.as_postgres().unwrap())
                .await
                .unwrap();
            assert!(killed);
        }
        Backend::Sqlite => unreachable!(),
    }
}

/// Opens the database of a [`TestDb`] by its namespace, e.g. in a child process.
pub async fn attach(backend: Backend, namespace: &str) -> Db {
    match backend {
        Backend::Sqlite => Db::connect(namespace).await.unwrap(),
        Backend::MySql => {
            let o = sqlx::mysql::MySqlConnectOptions::from_str(&mysql_url())
                .unwrap()
                .database(namespace);
            Db::from_mysql_pool(sqlx::MySqlPool::connect_with(o).await.unwrap())
        }
        Backend::Postgres => {
            let o = sqlx::postgres::PgConnectOptions::from_str(&pg_url())
                .unwrap()
                .options([("search_path", namespace)]);
            Db::from_pg_pool(sqlx::PgPool::connect_with(o).await.unwrap())
        }
    }
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        }
    }

    pub fn from_name(name: &str) -> Backend {
        match name {
            "sqlite" => Backend::Sqlite,
            "mysql" => Backend::MySql,
            "postgres" => Backend::Postgres,
            other => panic!("unknown backend {other}"),
        }
    }
}
