use safesync::prelude::*;

#[safesync::transactional(retry, retry = RetryPolicy::never())]
async fn deposit(tx: &mut Tx<'_>) -> Result<u64, Error> {
    tx.execute("SELECT 1").await
}

fn main() {}
