use std::sync::atomic::{AtomicU32, Ordering};

use safesync::prelude::*;
use safesync::transactional;

// Shared references are handed to every attempt as they are: no `Clone`,
// no `'static`, and the wrapper borrows them for the call.
#[transactional(retry)]
async fn rename(
    tx: &mut Tx<'_>,
    name: &str,
    attempts: &AtomicU32,
    ids: &[i64],
) -> Result<u64, Error> {
    attempts.fetch_add(1, Ordering::Relaxed);
    let _ = ids;
    tx.execute_with("UPDATE t SET name = ?", (name,)).await
}

#[transactional]
async fn once<'a>(tx: &mut Tx<'_>, name: &'a str) -> Result<&'a str, Error> {
    tx.execute("SELECT 1").await?;
    Ok(name)
}

// A borrowed result under `retry`.
#[transactional(retry)]
async fn echo<'a>(_tx: &mut Tx<'_>, name: &'a str) -> Result<&'a str, Error> {
    Ok(name)
}

#[allow(dead_code)]
async fn call(db: &Db) -> Result<(), Error> {
    let name = String::from("ada");
    let attempts = AtomicU32::new(0);
    let ids = vec![1, 2];
    rename(db, &name, &attempts, &ids).await?;
    let back: &str = once(db, &name).await?;
    assert_eq!(back, "ada");
    assert_eq!(echo(db, &name).await?, "ada");
    Ok(())
}

fn main() {}
