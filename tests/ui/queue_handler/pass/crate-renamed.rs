//! `crate = "…"` names safesync where it is renamed or re-exported.

use std::time::Duration;

use safesync as ss;
use ss::queue::{Handler, PlainHandler};

#[ss::queue_handler(stream = "orders", group = "billing", crate = "ss", retry = false, timeout = "10s")]
async fn bill(_tx: &mut ss::Tx<'_>, _msg: i64) -> Result<(), ss::Error> {
    Ok(())
}

#[ss::queue_handler(stream = "orders", group = "mailer", crate = "ss", timeout = "250ms")]
async fn notify(_msg: i64) -> Result<(), ss::Error> {
    Ok(())
}

mod nested {
    #[crate::ss::queue_handler(stream = "audit", crate = "crate::ss")]
    pub async fn audit(_tx: &mut crate::ss::Tx<'_>, _msg: String) -> Result<(), crate::ss::Error> {
        Ok(())
    }
}

fn main() {
    assert_eq!(Handler::retry_policy(&bill), Some(ss::RetryPolicy::never()));
    assert_eq!(Handler::timeout(&bill), Some(Duration::from_secs(10)));
    assert_eq!(PlainHandler::timeout(&notify), Some(Duration::from_millis(250)));
    assert_eq!(Handler::group(&nested::audit), "audit");
    assert_eq!(nested::audit::stream().name(), "audit");
}
