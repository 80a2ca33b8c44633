use safesync::prelude::*;

async fn pay(tx: &mut Tx<'_>) -> Result<u64, Error> {
    tx.execute_with("UPDATE accounts SET balance = ?", 10_i64).await
}

fn main() {}
