use std::sync::atomic::{AtomicU32, Ordering};

use safesync::prelude::*;
use safesync::transactional;

fn assert_send<T: Send>(_: T) {}

#[transactional]
async fn plain(tx: &mut Tx<'_>, id: i64, name: String) -> Result<u64, Error> {
    let _ = (id, name);
    tx.execute("SELECT 1").await
}

#[transactional(retry)]
async fn retried(tx: &mut Tx<'_>, name: &str, attempts: &AtomicU32) -> Result<u64, Error> {
    attempts.fetch_add(1, Ordering::Relaxed);
    let _ = name;
    tx.execute("SELECT 1").await
}

#[allow(dead_code)]
fn futures_are_send(db: &Db, name: &str, attempts: &AtomicU32) {
    assert_send(plain(db, 1, name.to_owned()));
    assert_send(retried(db, name, attempts));
}

#[allow(dead_code)]
async fn spawned(db: Db) {
    let attempts = std::sync::Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        let name = String::from("ada");
        plain(&db, 1, name.clone()).await?;
        retried(&db, &name, &attempts).await
    })
    .await
    .unwrap()
    .unwrap();
}

fn main() {}
