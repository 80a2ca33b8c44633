use safesync::prelude::*;
use safesync::queue_handler;

struct NotSerde {
    order_id: i64,
}

#[queue_handler(stream = "orders")]
async fn bill(_tx: &mut Tx<'_>, msg: NotSerde) -> Result<(), Error> {
    let _ = msg.order_id;
    Ok(())
}

fn main() {}
