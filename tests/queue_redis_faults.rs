//! The queue's Redis connections under faults, with every SQL backend: a
//! connection black-holed by a proxy cannot hang the worker, and idle
//! consumers are removed (by the worker itself, too) only when nothing is
//! pending on them, while the worker refreshes the health gauges.

#![allow(clippy::manual_assert)]

mod common;

use std::time::{Duration, Instant};

use common::Backend;
use common::faults::{
    Bill, MESSAGES, delete_stream, pending, progress, redis_url, setup, wait_for_progress,
};
use safesync::redis;
use safesync::{CancellationToken, Worker};

#[tokio::test]
async fn idle_consumers_are_removed_only_when_nothing_is_pending() {
    let url = redis_url();
    let stream = common::unique("q_idle");
    let client = safesync::queue::client(&url).unwrap();
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("billing")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .unwrap();
    for i in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("data")
            .arg(format!("{{\"order_id\":{i}}}"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // `done` reads one entry and acks it; `busy` reads one and keeps it pending.
    for consumer in ["done", "busy"] {
        let _read: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("billing")
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        if consumer == "done" {
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("billing")
                .arg("-")
                .arg("+")
                .arg(10)
                .arg("done")
                .query_async(&mut c)
                .await
                .unwrap();
            let redis::Value::Array(entries) = pending else {
                panic!("{pending:?}")
            };
            for e in entries {
                let redis::Value::Array(fields) = e else {
                    panic!()
                };
                let redis::Value::BulkString(id) = &fields[0] else {
                    panic!()
                };
                let acked: i64 = redis::cmd("XACK")
                    .arg(&stream)
                    .arg("billing")
                    .arg(id.as_slice())
                    .query_async(&mut c)
                    .await
                    .unwrap();
                assert_eq!(acked, 1);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed = safesync::queue::remove_idle_consumers(
        &client,
        &stream,
        "billing",
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert_eq!(removed, vec!["done".to_owned()]);
    let h = safesync::queue::health(&client, &stream, "billing")
        .await
        .unwrap();
    let names: Vec<_> = h
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(
        names,
        vec![("busy", 1)],
        "the consumer with a pending entry is kept, and so is its entry"
    );
    assert_eq!(h.pending, 1);
    delete_stream(&url, &stream).await;
}

async fn the_worker_removes_idle_consumers_and_refreshes_health_gauges(backend: Backend) {
    let stream = common::unique("q_house");
    let t = setup(backend, &stream, &redis_url()).await;
    let client = safesync::queue::client(&redis_url()).unwrap();
    let mut c = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("billing")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg("billing")
        .arg("ghost")
        .query_async(&mut c)
        .await
        .unwrap();

    let registry = safesync::prometheus::Registry::new();
    let metrics = safesync::queue::QueueMetrics::register(&registry).unwrap();
    let s: &'static str = Box::leak(stream.clone().into_boxed_str());
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        Worker::new(t.db.clone(), client.clone())
            .handle(Bill {
                stream: s,
                linger: Duration::ZERO,
            })
            .concurrency(4)
            // Its own consumer is idle for up to `block` (1 s) in every
            // blocked read once the stream is drained, far past the 300 ms
            // threshold: only its exemption keeps it.
            .block(Duration::from_secs(1))
            .metrics(metrics)
            .housekeeping_every(Duration::from_millis(100))
            .remove_idle_consumers_after(Duration::from_millis(300))
            .run(stop.clone()),
    );
    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    let start = Instant::now();
    loop {
        let h = safesync::queue::health(&client, &stream, "billing")
            .await
            .unwrap();
        let ghost = h.consumers.iter().any(|c| c.name == "ghost");
        let text = safesync::prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let gauge = text.lines().any(|l| {
            l.starts_with("safesync_queue_length{") && l.ends_with(&format!(" {MESSAGES}"))
        });
        if !ghost && gauge && h.pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ghost still there or gauges stale: {h:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Over two blocked reads and twenty housekeeping rounds, the worker
    // never removes its own consumer.
    for _ in 0..25 {
        let h = safesync::queue::health(&client, &stream, "billing")
            .await
            .unwrap();
        assert!(
            h.consumers.len() == 1 && h.consumers[0].name != "ghost",
            "the worker's own consumer stays: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    delete_stream(&redis_url(), &stream).await;
    t.cleanup().await;
}

/// A TCP proxy to the shared Redis that can black-hole traffic: bytes are
/// swallowed in both directions while connections stay open, as with a dead
/// peer behind a firewall.
struct BlackHoleProxy {
    port: u16,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHoleProxy {
    async fn start(upstream: std::net::SocketAddr) -> BlackHoleProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let swallow = std::sync::Arc::new(AtomicBool::new(false));
        let flag = swallow.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut from, mut to, flag) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                        flag.clone(),
                    ),
                    (Box::new(ro), Box::new(wi), flag.clone()),
                ] {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) {
                                continue; // swallowed
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        BlackHoleProxy { port, swallow }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn black_hole(&self, on: bool) {
        self.swallow.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn a_black_holed_connection_cannot_hang_the_worker(backend: Backend) {
    let upstream = {
        let url = redis_url();
        let host_port = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = BlackHoleProxy::start(upstream).await;
    let stream = common::unique("q_hole");
    let t = setup(backend, &stream, &redis_url()).await;
    let s: &'static str = Box::leak(stream.clone().into_boxed_str());
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        Worker::new(t.db.clone(), safesync::queue::client(&proxy.url()).unwrap())
            .handle(Bill {
                stream: s,
                linger: Duration::from_millis(5),
            })
            .concurrency(4)
            .block(Duration::from_millis(500))
            .claim_idle(Duration::from_millis(500))
            .run(stop.clone()),
    );
    wait_for_progress(&t.db, 60, Duration::from_secs(60)).await;
    proxy.black_hole(true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (during, _) = progress(&t.db).await;
    proxy.black_hole(false);
    // Every read and command has a client deadline: the worker gives up on
    // the dead connections, reconnects, and finishes.
    wait_for_progress(&t.db, MESSAGES, Duration::from_secs(60)).await;
    let start = Instant::now();
    while pending(&redis_url(), &stream).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pending entries never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    eprintln!("black hole at {during}/{MESSAGES}: {summary:?}");
    assert!(during < MESSAGES, "the black hole came mid-stream");
    assert_eq!(
        progress(&t.db).await,
        (MESSAGES, 0),
        "every order exactly once"
    );
    delete_stream(&redis_url(), &stream).await;
    t.cleanup().await;
}

on_every_backend!(
    the_worker_removes_idle_consumers_and_refreshes_health_gauges,
    a_black_holed_connection_cannot_hang_the_worker,
);
