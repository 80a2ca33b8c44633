use safesync::prelude::*;
use safesync::queue_handler;

const LIMIT: u64 = 30;

#[queue_handler(stream = "orders", timeout = LIMIT)]
async fn bill(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
