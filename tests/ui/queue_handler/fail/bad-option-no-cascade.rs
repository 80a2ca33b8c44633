//! A mistake in the options (or a missing `async`) is reported once, at the
//! option: the handler is still emitted, so the worker, the typed stream
//! and direct calls below compile without follow-up errors.

use safesync::prelude::*;
use safesync::queue_handler;

#[queue_handler(stream = "orders", colour = "red", timeout = "soon")]
async fn bill(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "mailer", retry = false)]
async fn notify(_msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(group = "audit")]
fn audit(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[allow(dead_code)]
async fn run(db: Db, redis: safesync::queue::Redis) -> Result<(), Error> {
    bill::stream().send(&redis, &7).await?;
    audit::stream().send(&redis, &7).await?;
    let mut tx = db.begin().await?;
    bill::call(&mut tx, 1).await?;
    audit::call(&mut tx, 1).await?;
    notify::call(1).await?;
    safesync::Worker::new(db, redis)
        .handle(bill)
        .handle(notify)
        .handle(audit)
        .run_until_signal()
        .await?;
    Ok(())
}

fn main() {}
