use safesync::prelude::*;
use safesync::queue_handler;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

#[queue_handler(stream = "orders")]
async fn notify(_msg: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

async fn producer(redis: &safesync::queue::Redis) -> Result<(), Error> {
    notify::stream().send(redis, &"order 7").await?;
    Ok(())
}

fn main() {
    let _ = producer;
}
