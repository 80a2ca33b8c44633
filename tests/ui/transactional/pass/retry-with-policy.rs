use std::time::Duration;

use safesync::prelude::*;
use safesync::transactional;

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .base_delay(Duration::from_millis(1))
}

#[transactional(retry = policy())]
async fn bump(tx: &mut Tx<'_>, id: i64) -> Result<u64, Error> {
    let _ = id;
    tx.execute("SELECT 1").await
}

#[transactional(retry = RetryPolicy::never().retry_lock_timeouts(true))]
async fn once(_tx: &mut Tx<'_>) -> Result<(), Error> {
    Ok(())
}

#[allow(dead_code)]
async fn call(db: &Db) -> Result<(), Error> {
    bump(db, 1).await?;
    once(db).await
}

fn main() {}
