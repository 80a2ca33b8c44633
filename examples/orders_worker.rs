//! A producer, a worker that bills orders under row locks, and a
//! Prometheus `/metrics` endpoint.
//!
//! Needs Redis (`SAFESYNC_REDIS_URL`, default `redis://127.0.0.1:6379`); the
//! database defaults to a SQLite file in a temporary directory:
//!
//! ```text
//! cargo run --example orders_worker --features queue
//! cargo run --example orders_worker --features queue,postgres -- --database-url postgres://postgres@127.0.0.1:5432/test
//! curl http://127.0.0.1:9898/metrics     # while it runs (--hold SECS keeps it up)
//! ```

use std::time::{Duration, Instant};

use safesync::prelude::*;
use safesync::queue::{Worker, health};
use safesync::queue_handler;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Versioned, Locked)]
#[safesync(table = "example_orders")]
struct Order {
    #[safesync(key)]
    id: i64,
    status: String,
    #[safesync(version)]
    version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

/// Bills one order: locks its row, marks it billed. Runs inside the worker's
/// transaction; the entry is acknowledged only after the commit. A deadlock
/// or busy database is retried at once in a new transaction (the worker's
/// default `RetryPolicy`); a delivery taking over 10 s is cancelled, rolled
/// back and delivered again after `claim_idle` (60 s).
#[queue_handler(stream = "example:orders", group = "billing", timeout = "10s")]
async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
    let mut order = Order::lock(tx, &msg.order_id)
        .await?
        .ok_or_else(Error::not_found)?;
    order.status = "billed".into();
    order.update(tx).await
}

const ORDERS: i64 = 1_000;

/// Serves the default Prometheus registry as text on `addr`, until `stop`.
async fn serve_metrics(addr: &str, stop: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (mut socket, _) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let body = safesync::prometheus::TextEncoder::new()
                .encode_to_string(&safesync::prometheus::gather())
                .unwrap_or_default();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Prints safesync's events; with the queue, a WARN per failed delivery
    // and an ERROR per dead letter.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let mut hold = Duration::ZERO;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--database-url" => url = Some(value),
            "--hold" => hold = Duration::from_secs(value.parse()?),
            _ => {
                return Err(format!(
                    "unknown flag `{flag}`; expected --database-url URL, --hold SECS"
                )
                .into());
            }
        }
    }
    let dir = tempfile::tempdir()?;
    let url = url.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("orders.db").display()));
    let redis_url =
        std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());

    let db = Db::connect(&url).await?;
    let redis = safesync::queue::client(&redis_url)?;
    db.execute("DROP TABLE IF EXISTS example_orders").await?;
    db.create_table::<Order>().await?;
    // Optional: `Worker::run` creates the ledger table itself when missing.
    safesync::queue::ensure_ledger(&db).await?;
    let mut conn = safesync::redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = safesync::redis::cmd("DEL")
        .arg(bill::stream().name())
        .query_async(&mut conn)
        .await?;

    // Producer: the orders, then one message per order.
    let mut tx = db.begin().await?;
    for id in 1..=ORDERS {
        Order {
            id,
            status: "new".into(),
            version: 0,
        }
        .insert(&mut tx)
        .await?;
    }
    tx.commit().await?;
    for id in 1..=ORDERS {
        bill::stream()
            .send(&redis, &OrderPlaced { order_id: id })
            .await?;
    }
    println!("produced {ORDERS} messages on `{}`", bill::stream().name());

    let stop = CancellationToken::new();
    let metrics = tokio::spawn(serve_metrics("127.0.0.1:9898", stop.clone()));
    println!("metrics on http://127.0.0.1:9898/metrics");

    let started = Instant::now();
    let worker = tokio::spawn(
        Worker::new(db.clone(), redis.clone())
            .handle(bill)
            .concurrency(8)
            .run(stop.clone()),
    );
    // Wait until every order is billed, then stop the worker.
    loop {
        match health(&redis, bill::stream().name(), "billing").await {
            Ok(h) if h.pending == 0 && h.lag == Some(0) => break,
            // The worker has not created its group yet.
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the worker did not drain the stream within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(hold).await;
    stop.cancel();
    let summary = worker.await??;
    let _ = metrics.await;
    println!("worker: {summary:?} in {:.2?}", started.elapsed());

    let mut tx = db.begin().await?;
    let mut billed = 0;
    for id in 1..=ORDERS {
        let o = Order::find(&mut tx, &id)
            .await?
            .ok_or_else(Error::not_found)?;
        billed += i64::from(o.status == "billed" && o.version == 1);
    }
    tx.rollback().await?;
    db.execute("DROP TABLE example_orders").await?;
    if billed == ORDERS {
        println!("verified: {billed} orders billed exactly once");
        Ok(())
    } else {
        Err(format!("only {billed} of {ORDERS} orders billed exactly once").into())
    }
}
