use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders", timeout = "30 seconds")]
async fn bill(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "half", timeout = "1.5s")]
async fn half(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "zero", timeout = "0s")]
async fn zero(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
