use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders")]
async fn bill(_msg: i64, _tx: &mut Tx<'_>) -> Result<(), Error> {
    Ok(())
}

fn main() {}
