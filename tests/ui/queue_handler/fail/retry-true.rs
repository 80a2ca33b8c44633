use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders", retry = true)]
async fn bill(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "twice", retry = false, retry = false)]
async fn twice(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
