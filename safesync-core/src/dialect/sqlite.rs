//! SQLite extended result codes.

use super::DbErrorKind;

const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_CONSTRAINT_PRIMARYKEY: i64 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i64 = 2067;

pub(super) fn classify(code: Option<&str>) -> Option<DbErrorKind> {
    let code: i64 = code?.parse().ok()?;
    match code {
        SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE => Some(DbErrorKind::Duplicate),
        // Extended codes keep the primary code in the low byte
        // (SQLITE_BUSY_SNAPSHOT = 517, SQLITE_LOCKED_SHAREDCACHE = 262, …).
        c if c & 0xff == SQLITE_BUSY || c & 0xff == SQLITE_LOCKED => Some(DbErrorKind::Busy),
        _ => None,
    }
}
