//! The attribute vocabulary: the derives' `#[safesync(…)]` keys and the
//! options of `#[transactional(…)]` and `#[queue_handler(…)]`.

pub(crate) const SAFESYNC: &str = "safesync";

pub(crate) const TABLE: &str = "table";
pub(crate) const SCHEMA: &str = "schema";
pub(crate) const CRATE: &str = "crate";
pub(crate) const CONTAINER_KEYS: &str = "`table`, `schema`, `crate`";

pub(crate) const KEY: &str = "key";
pub(crate) const VERSION: &str = "version";
pub(crate) const COLUMN: &str = "column";
pub(crate) const SKIP: &str = "skip";
pub(crate) const FIELD_KEYS: &str = "`key`, `version`, `column`, `skip`";

pub(crate) const TRANSACTIONAL: &str = "transactional";
pub(crate) const RETRY: &str = "retry";
pub(crate) const TRANSACTIONAL_KEYS: &str = "`retry`, `retry = <RetryPolicy>`, `crate = \"…\"`";

pub(crate) const QUEUE_HANDLER: &str = "queue_handler";
pub(crate) const STREAM: &str = "stream";
pub(crate) const GROUP: &str = "group";
pub(crate) const TIMEOUT: &str = "timeout";
pub(crate) const QUEUE_HANDLER_KEYS: &str = "`stream = \"…\"`, `group = \"…\"`, \
     `retry = <RetryPolicy>` or `retry = false`, `timeout = \"30s\"` or `timeout = <Duration>`, \
     `crate = \"…\"`";
