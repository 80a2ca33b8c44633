//! A producer, a worker that adds line items to orders with versioned
//! updates under concurrency, on a stream named from configuration, and a
//! Prometheus `/metrics` endpoint.
//!
//! 1,000 messages hit 10 order rows (100 each); 8 run at once, so handlers
//! often read the same row version and all but one of them lose the
//! versioned `update`. Each such conflict is retried in place, in a new
//! transaction; the run must end with no failed delivery and every row at
//! its exact count and total, printed, or the example exits non-zero.
//!
//! Needs Redis (`SAFESYNC_REDIS_URL`, default `redis://127.0.0.1:6379`); the
//! stream is `<SAFESYNC_EXAMPLE_ENV>.orders` (default `example.orders`); the
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

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "example_orders")]
struct Order {
    #[safesync(key)]
    id: i64,
    items: i64,
    total: i64,
    #[safesync(version)]
    version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LineAdded {
    order_id: i64,
    amount: i64,
}

/// Adds one line item to its order: reads the row, changes it, writes it
/// back only if nobody else did meanwhile (the versioned `update`). A lost
/// race is `Error::Conflict`, retried at once in a new transaction under
/// the worker's default `RetryPolicy`; the entry is acknowledged only after
/// the commit, and its ledger row makes the effect exactly once. A delivery
/// taking over 10 s is cancelled and rolled back.
///
/// The attribute's stream is the default; `main` runs it on a stream named
/// from the environment (`add_line.on(…)`).
#[queue_handler(stream = "example.orders", group = "billing", timeout = "10s")]
async fn add_line(tx: &mut Tx<'_>, msg: LineAdded) -> Result<(), Error> {
    let mut order = Order::find(tx, &msg.order_id)
        .await?
        .ok_or_else(Error::not_found)?;
    order.items += 1;
    order.total += msg.amount;
    order.update(tx).await
}

/// Order rows, and messages: message `i` (1..=MESSAGES) adds `i` to order
/// `i % ROWS + 1`.
const ROWS: i64 = 10;
const MESSAGES: i64 = 1_000; // a multiple of ROWS

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

/// The producer: the order rows, then the line items on `stream`.
async fn produce(
    db: &Db,
    conn: &mut safesync::redis::aio::MultiplexedConnection,
    stream: &safesync::Stream<LineAdded>,
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    for id in 1..=ROWS {
        Order {
            id,
            items: 0,
            total: 0,
            version: 0,
        }
        .insert(&mut tx)
        .await?;
    }
    tx.commit().await?;
    for i in 1..=MESSAGES {
        let msg = LineAdded {
            order_id: i % ROWS + 1,
            amount: i,
        };
        stream
            .send_on(conn, &msg, &safesync::SendOptions::default())
            .await?;
    }
    Ok(())
}

/// Prints every row beside what it must hold (its messages: `MESSAGES /
/// ROWS` items, the sum of their amounts, one version per item) and
/// returns the ids of the rows that differ.
async fn check_rows(db: &Db) -> Result<Vec<i64>, Error> {
    let mut tx = db.begin().await?;
    let mut wrong = Vec::new();
    for id in 1..=ROWS {
        let o = Order::find(&mut tx, &id)
            .await?
            .ok_or_else(Error::not_found)?;
        let items = MESSAGES / ROWS;
        let total: i64 = (1..=MESSAGES).filter(|i| i % ROWS + 1 == id).sum();
        println!(
            "order {id}: items {} total {} version {} (expected {items}, {total}, {items})",
            o.items, o.total, o.version
        );
        if (o.items, o.total, o.version) != (items, total, items) {
            wrong.push(id);
        }
    }
    tx.rollback().await?;
    Ok(wrong)
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

    let env = std::env::var("SAFESYNC_EXAMPLE_ENV").unwrap_or_else(|_| "example".into());

    let db = Db::connect(&url).await?;
    let redis = safesync::queue::client(&redis_url)?;
    db.execute("DROP TABLE IF EXISTS example_orders").await?;
    db.create_table::<Order>().await?;
    // Optional: `Worker::run` creates the ledger table itself when missing.
    safesync::queue::ensure_ledger(&db).await?;

    // The handler on a stream named from configuration; its producer
    // accepts only `LineAdded`.
    let billing = add_line.on(format!("{env}.orders"), "billing");
    let stream = billing.stream();
    let mut conn = safesync::redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = safesync::redis::cmd("DEL")
        .arg(stream.name())
        .arg(safesync::queue::dead_letter_key(stream.name(), "billing"))
        .query_async(&mut conn)
        .await?;

    produce(&db, &mut conn, &stream).await?;
    println!(
        "produced {MESSAGES} messages for {ROWS} orders on `{}`",
        stream.name()
    );

    let stop = CancellationToken::new();
    let metrics = tokio::spawn(serve_metrics("127.0.0.1:9898", stop.clone()));
    println!("metrics on http://127.0.0.1:9898/metrics");

    let started = Instant::now();
    let worker = tokio::spawn(
        Worker::new(db.clone(), redis.clone())
            .handle(billing)
            .concurrency(8)
            .run(stop.clone()),
    );
    // Wait until every message is handled, then stop the worker.
    loop {
        match health(&redis, stream.name(), "billing").await {
            Ok(h) if h.pending == 0 && h.lag == Some(0) => break,
            // The worker has not created its group yet.
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if worker.is_finished() {
            break; // it failed: its error is returned below
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

    let wrong = check_rows(&db).await?;
    db.execute("DROP TABLE example_orders").await?;
    if summary.failed != 0 {
        return Err(format!(
            "{} deliveries failed: {:?}",
            summary.failed, summary.last_errors
        )
        .into());
    }
    if !wrong.is_empty() {
        return Err(format!("orders {wrong:?} do not hold exactly their messages").into());
    }
    println!("verified: {MESSAGES} messages on {ROWS} rows, no failed delivery, every row exact");
    Ok(())
}
