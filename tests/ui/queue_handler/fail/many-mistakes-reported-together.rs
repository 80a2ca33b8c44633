use safesync::prelude::*;
use safesync::queue_handler;

// Every mistake in the options and the signature is reported in one build:
// no `stream`, an empty `group`, `retry = true`, a timeout without a
// readable unit, an unknown option, a `crate` that is not a string, the
// missing `async` and a payload taken by reference.
#[queue_handler(group = "", retry = true, timeout = "10 parsecs", colour = "red", crate = 5)]
fn bill(_tx: &mut Tx<'_>, _msg: &i64) -> Result<(), Error> {
    Ok(())
}

fn main() {}
