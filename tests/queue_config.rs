//! Configuration errors with every SQL backend's `Db`: an unreachable
//! Redis is a clear error in bounded time, and settings out of range are
//! `Error::Config` naming the setting, returned by `run` before any work.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::queue::*;
use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::{CancellationToken, Stream, Worker};

// --- Unreachable Redis ----------------------------------------------------

async fn an_unreachable_redis_is_a_clear_error_in_bounded_time(backend: Backend) {
    let err = safesync::queue::client("http://user:secret@nowhere").unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cannot use Redis URL `http://user:***@nowhere`"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");

    // Nothing listens on the port: refused at once.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = safesync::queue::client(&format!("redis://127.0.0.1:{refused}")).unwrap();
    let started = Instant::now();
    let err = Stream::<OrderPlaced>::new("nowhere")
        .send(&client, &OrderPlaced { order_id: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("redis connect to 127.0.0.1:{refused} failed: ")),
        "{err}"
    );
    let t = TestDb::new(backend).await;
    let err = Worker::new(t.db.clone(), client.clone())
        .handle(handler("nowhere", &Arc::new(Behaviour::default())))
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("connect to 127.0.0.1:{refused}")),
        "{err}"
    );
    let err = safesync::queue::health(&client, "nowhere", "billing")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A server that accepts connections and never answers: the connect
    // timeout (5 s) ends the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let client = safesync::queue::client(&format!("redis://127.0.0.1:{port}")).unwrap();
    let started = Instant::now();
    let err = Stream::<OrderPlaced>::new("nowhere")
        .send(&client, &OrderPlaced { order_id: 1 })
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("connect to 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    accept.abort();

    // A worker without handlers is a configuration error, before any I/O.
    let err = Worker::new(t.db.clone(), client)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs at least one handler"),
        "{err}"
    );
    t.cleanup().await;
}

// --- Settings that cannot panic ----------------------------------------------

async fn settings_out_of_range_are_config_errors_naming_them(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    let stream = unique_stream("config");
    let behaviour = Arc::new(Behaviour::default());
    let worker = || Worker::new(db.clone(), redis_client()).handle(plain(stream, &behaviour));
    let cases: [(Worker, &str); 7] = [
        (
            worker().handler_timeout(Duration::from_secs(60)),
            "`Worker::handler_timeout` is 60s; allowed: 1ms to below `Worker::claim_idle` (60s)",
        ),
        (
            Worker::new(db.clone(), redis_client())
                .handle(SlowPlain(stream))
                .claim_idle(Duration::from_secs(10)),
            "the timeout of the handler of",
        ),
        (worker().block(Duration::MAX), "`Worker::block` is"),
        (
            worker().concurrency(usize::MAX),
            "`Worker::concurrency` is 18446744073709551615; allowed: 1 to 100000",
        ),
        (
            worker()
                .batch(usize::MAX)
                .messages_per_transaction(usize::MAX),
            "`Worker::batch` is 18446744073709551615",
        ),
        (
            worker().batch(100_000).messages_per_transaction(10_000),
            "`Worker::batch` × `Worker::messages_per_transaction` is 100000 × 10000",
        ),
        (
            worker().claim_idle(Duration::MAX),
            "`Worker::claim_idle` is",
        ),
    ];
    for (w, needle) in cases {
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), w.run(CancellationToken::new()))
            .await
            .expect("returns at once")
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    delete_stream(stream).await;
    t.cleanup().await;
}

/// A plain handler whose own timeout is 10 s.
struct SlowPlain(&'static str);

impl safesync::PlainHandler for SlowPlain {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.0
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle(&self, _msg: OrderPlaced) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(10))
    }
}

on_every_backend!(
    an_unreachable_redis_is_a_clear_error_in_bounded_time,
    settings_out_of_range_are_config_errors_naming_them,
);
