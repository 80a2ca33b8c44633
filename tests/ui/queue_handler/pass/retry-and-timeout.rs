use std::time::Duration;

use safesync::prelude::*;
use safesync::queue::{Handler, PlainHandler};
use safesync::queue_handler;

fn my_policy() -> RetryPolicy {
    RetryPolicy::default().max_attempts(20)
}

const SLOW: Duration = Duration::from_secs(45);

#[queue_handler(stream = "orders", group = "billing", retry = my_policy(), timeout = "10s")]
async fn bill(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "audit", retry = false, timeout = SLOW)]
async fn audit(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "stats", timeout = "250ms")]
async fn stats(_tx: &mut Tx<'_>, _msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "mailer", timeout = "2m")]
async fn notify(_msg: i64) -> Result<(), Error> {
    Ok(())
}

#[queue_handler(stream = "orders", group = "plain")]
async fn plain(_msg: i64) -> Result<(), Error> {
    Ok(())
}

fn main() {
    assert_eq!(Handler::retry_policy(&bill), Some(my_policy()));
    assert_eq!(Handler::timeout(&bill), Some(Duration::from_secs(10)));
    assert_eq!(Handler::retry_policy(&audit), Some(RetryPolicy::never()));
    assert_eq!(Handler::timeout(&audit), Some(SLOW));
    assert_eq!(Handler::retry_policy(&stats), None, "the worker's policy");
    assert_eq!(Handler::timeout(&stats), Some(Duration::from_millis(250)));
    assert_eq!(PlainHandler::timeout(&notify), Some(Duration::from_secs(120)));
    assert_eq!(PlainHandler::timeout(&plain), None, "the worker's timeout");
}
