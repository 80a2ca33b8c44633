//! MySQL 8 and MariaDB error numbers.

use super::DbErrorKind;

/// `ER_DUP_ENTRY`
const DUP_ENTRY: u16 = 1062;
/// `ER_LOCK_WAIT_TIMEOUT`; also what MariaDB answers for a failed `NOWAIT`.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`
const DEADLOCK: u16 = 1213;
/// `ER_LOCK_NOWAIT` (MySQL 8)
const LOCK_NOWAIT: u16 = 3572;

pub(super) fn classify(number: u16) -> Option<DbErrorKind> {
    match number {
        DUP_ENTRY => Some(DbErrorKind::Duplicate),
        DEADLOCK => Some(DbErrorKind::Deadlock),
        LOCK_WAIT_TIMEOUT => Some(DbErrorKind::LockWaitTimeout),
        LOCK_NOWAIT => Some(DbErrorKind::LockNotAvailable),
        _ => None,
    }
}
