//! `crate = "…"` is where the generated code looks for safesync: a path
//! that does not resolve is reported at the string.

use safesync::prelude::*;

#[safesync::transactional(retry, crate = "not_safesync")]
async fn deposit(tx: &mut Tx<'_>, id: i64) -> Result<u64, Error> {
    let _ = id;
    tx.execute("SELECT 1").await
}

fn main() {}
