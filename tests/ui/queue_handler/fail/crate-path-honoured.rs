//! `crate = "…"` is where the generated code looks for safesync: a path
//! that does not resolve is reported at the string.

use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders", crate = "not_safesync")]
async fn bill(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
