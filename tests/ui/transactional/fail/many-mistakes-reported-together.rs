use safesync::prelude::*;

// Every mistake in the options and the signature is reported in one build.
#[safesync::transactional(retyr, crate = 5, retry(3))]
fn deposit(tx: &mut Tx<'_>, counter: &mut i64) -> Result<(), Error> {
    let _ = (tx, counter);
    Ok(())
}

// A signature that leaves no wrapper to write: all three mistakes at once.
#[safesync::transactional]
const fn open(id: i64) {
    let _ = id;
}

fn main() {}
