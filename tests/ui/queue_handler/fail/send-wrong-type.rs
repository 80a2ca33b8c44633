use safesync::prelude::*;
use safesync::queue_handler;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

#[queue_handler(stream = "orders")]
async fn bill(_tx: &mut Tx<'_>, _msg: OrderPlaced) -> Result<(), Error> {
    Ok(())
}

async fn producer(redis: &safesync::queue::Redis) -> Result<(), Error> {
    bill::stream().send(redis, &"order 7").await?;
    Ok(())
}

fn main() {
    let _ = producer;
}
