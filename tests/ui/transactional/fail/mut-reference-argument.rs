use safesync::prelude::*;

#[safesync::transactional(retry)]
async fn deposit(tx: &mut Tx<'_>, id: i64, log: &mut Vec<String>) -> Result<u64, Error> {
    log.push(format!("deposit {id}"));
    tx.execute("SELECT 1").await
}

fn main() {}
