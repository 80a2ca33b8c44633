// The producers for a stream named at runtime are typed by the handler's
// payload, like `bill::stream()`: another type does not compile.
use safesync::prelude::*;
use safesync::queue_handler;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

#[derive(Serialize)]
struct Refund {
    order_id: i64,
}

#[queue_handler(stream = "orders", group = "billing")]
async fn bill(_tx: &mut Tx<'_>, _msg: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

async fn producer(redis: &safesync::queue::Redis, env: &str) -> Result<(), Error> {
    let routed = bill.on(format!("{env}.orders"), "billing");
    routed.stream().send(redis, &Refund { order_id: 7 }).await?;
    bill::stream_named(format!("{env}.orders"))
        .send(redis, &"order 7")
        .await?;
    Ok(())
}

fn main() {
    let _ = producer;
}
