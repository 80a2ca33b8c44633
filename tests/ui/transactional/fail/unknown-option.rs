use safesync::prelude::*;

#[safesync::transactional(retries)]
async fn deposit(tx: &mut Tx<'_>) -> Result<u64, Error> {
    tx.execute("SELECT 1").await
}

#[safesync::transactional(retry, isolation = "serializable")]
async fn audit(tx: &mut Tx<'_>) -> Result<u64, Error> {
    tx.execute("SELECT 1").await
}

#[safesync::transactional(retry(3))]
async fn limited(tx: &mut Tx<'_>) -> Result<u64, Error> {
    tx.execute("SELECT 1").await
}

// The wrappers are still emitted: no follow-up errors at call sites.
#[allow(dead_code)]
async fn call(db: &Db) -> Result<u64, Error> {
    Ok(deposit(db).await? + audit(db).await? + limited(db).await?)
}

fn main() {}
