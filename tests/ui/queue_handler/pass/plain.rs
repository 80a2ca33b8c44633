//! A handler without a transaction: `async fn name(msg: Payload)`.
use safesync::prelude::*;
use safesync::queue_handler;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

/// Forwards an order somewhere idempotent.
#[queue_handler(stream = "orders", group = "mailer")]
async fn notify(msg: OrderPlaced) -> Result<(), Error> {
    let _ = msg.order_id;
    Ok(())
}

#[queue_handler(stream = "orders", group = "billing")]
async fn bill(_tx: &mut Tx<'_>, _msg: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "audit")]
pub async fn audit(_msg: serde_json::Value) -> Result<(), Error> {
    Ok(())
}

fn assert_plain<H: safesync::PlainHandler>(_: H) {}

async fn producer(redis: &safesync::queue::Redis) -> Result<(), Error> {
    notify::stream()
        .send(redis, &OrderPlaced { order_id: 7 })
        .await?;
    audit::stream()
        .send(redis, &serde_json::json!({"any": "json"}))
        .await?;
    Ok(())
}

async fn direct() -> Result<(), Error> {
    notify::call(OrderPlaced { order_id: 1 }).await
}

/// Both kinds on one worker.
fn worker(db: Db, redis: safesync::queue::Redis) -> safesync::Worker {
    safesync::Worker::new(db, redis)
        .handle(bill)
        .handle(notify)
        .handle(audit)
        // Both kinds under runtime names too.
        .handle(bill.on("staging.orders", "billing"))
        .handle(notify.on("staging.orders", "mailer"))
}

fn main() {
    assert_plain(notify);
    assert_plain(audit);
    assert_eq!(safesync::PlainHandler::group(&audit), "audit");
    assert_eq!(safesync::PlainHandler::group(&notify), "mailer");
    assert_eq!(notify::stream().name(), "orders");
    let _ = (producer, direct, worker);
}
