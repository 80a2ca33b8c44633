use safesync::prelude::*;

#[safesync::transactional]
async fn fire_and_forget(tx: &mut Tx<'_>) {
    let _ = tx.execute("SELECT 1").await;
}

#[safesync::transactional]
async fn rows(tx: &mut Tx<'_>) -> u64 {
    tx.execute("SELECT 1").await.unwrap_or(0)
}

fn main() {}
