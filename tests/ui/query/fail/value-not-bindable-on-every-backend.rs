use safesync::prelude::*;

struct Money(i64);

async fn pay(tx: &mut Tx<'_>) -> Result<u64, Error> {
    tx.execute_with("UPDATE accounts SET balance = ?", (Money(1),)).await
}

fn main() {}
