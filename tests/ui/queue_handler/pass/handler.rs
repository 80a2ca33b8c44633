use safesync::prelude::*;
use safesync::queue_handler;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

/// Bills an order.
#[queue_handler(stream = "orders", group = "billing")]
async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
    let _ = (tx, msg.order_id);
    Ok(())
}

#[queue_handler(stream = "audit")]
pub async fn audit(_tx: &mut safesync::Tx<'_>, _msg: serde_json::Value) -> Result<(), Error> {
    Ok(())
}

fn assert_handler<H: safesync::queue::Handler>(_: H) {}
fn assert_send<T: Send>(_: T) {}

async fn producer(redis: &safesync::queue::Redis) -> Result<(), Error> {
    bill::stream().send(redis, &OrderPlaced { order_id: 7 }).await?;
    audit::stream().send(redis, &serde_json::json!({"any": "json"})).await?;
    // Runtime names: the same typed producers.
    let env = std::env::var("APP_ENV").unwrap_or_default();
    bill.on(format!("{env}.orders"), "billing")
        .stream()
        .send(redis, &OrderPlaced { order_id: 7 })
        .await?;
    bill::stream_named(format!("{env}.orders"))
        .send(redis, &OrderPlaced { order_id: 7 })
        .await?;
    Ok(())
}

async fn direct(tx: &mut Tx<'_>) -> Result<(), Error> {
    bill::call(tx, OrderPlaced { order_id: 1 }).await
}

fn main() {
    assert_handler(bill);
    assert_handler(audit);
    let routed = bill.on("staging.orders", "billing");
    assert_eq!(routed.stream().name(), "staging.orders");
    fn assert_into_handler<K, H: safesync::queue::IntoHandler<K>>(_: H) {}
    assert_into_handler(routed);
    assert_eq!(safesync::queue::Handler::group(&audit), "audit");
    assert_eq!(bill::stream().name(), "orders");
    let client = safesync::queue::client("redis://127.0.0.1:1").unwrap();
    assert_send(async move { producer(&client).await });
    let _ = direct;
}
