//! The attribute vocabulary.

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
