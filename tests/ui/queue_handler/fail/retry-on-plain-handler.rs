use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders", retry = RetryPolicy::default())]
async fn notify(_msg: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
