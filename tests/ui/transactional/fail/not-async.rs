use safesync::prelude::*;

#[safesync::transactional]
fn deposit(tx: &mut Tx<'_>, id: i64) -> Result<u64, Error> {
    let _ = id;
    tx.execute("SELECT 1").await
}

// The wrapper is still emitted: no follow-up errors at call sites.
#[allow(dead_code)]
async fn call(db: &Db) -> Result<u64, Error> {
    deposit(db, 1).await
}

fn main() {}
