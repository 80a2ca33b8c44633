//! PostgreSQL SQLSTATE codes.

use super::DbErrorKind;

pub(super) fn classify(sqlstate: &str) -> Option<DbErrorKind> {
    match sqlstate {
        // unique_violation
        "23505" => Some(DbErrorKind::Duplicate),
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Some(DbErrorKind::Deadlock),
        // lock_not_available: NOWAIT, and lock_timeout expiring
        "55P03" => Some(DbErrorKind::LockNotAvailable),
        _ => None,
    }
}
