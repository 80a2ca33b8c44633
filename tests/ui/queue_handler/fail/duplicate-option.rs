use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders", stream = "invoices", retry = false, retry = false)]
async fn bill(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
