use safesync::prelude::*;

#[safesync::transactional]
async fn by_id(id: i64, tx: &mut Tx<'_>) -> Result<u64, Error> {
    let _ = id;
    tx.execute("SELECT 1").await
}

#[safesync::transactional]
async fn shared_tx(tx: &Tx<'_>) -> Result<(), Error> {
    let _ = tx;
    Ok(())
}

#[safesync::transactional]
async fn owned_tx(tx: Tx<'static>) -> Result<(), Error> {
    tx.commit().await
}

fn main() {}
