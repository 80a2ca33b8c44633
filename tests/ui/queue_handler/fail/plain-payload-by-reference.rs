use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders")]
async fn notify(_msg: &str) -> Result<(), Error> {
    Ok(())
}

fn main() {}
