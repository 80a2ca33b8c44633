use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders")]
async fn bill(_tx: &mut Tx<'_>, _msg: i64, _extra: String) -> Result<(), Error> {
    Ok(())
}

fn main() {}
