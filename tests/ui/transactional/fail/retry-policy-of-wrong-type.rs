use safesync::prelude::*;

#[safesync::transactional(retry = 3)]
async fn deposit(tx: &mut Tx<'_>) -> Result<u64, Error> {
    tx.execute("SELECT 1").await
}

fn main() {}
