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

/// The index an `ER_DUP_ENTRY` message names: `PRIMARY` in MariaDB's
/// "Duplicate entry '7' for key 'PRIMARY'" and in MySQL 8's "… for key
/// 'accounts.PRIMARY'".
pub(crate) fn duplicate_key_name(message: &str) -> Option<&str> {
    let (_, rest) = message.rsplit_once(" for key '")?;
    let name = rest.strip_suffix('\'')?;
    Some(name.rsplit_once('.').map_or(name, |(_, index)| index))
}

#[cfg(test)]
mod tests {
    use super::duplicate_key_name;

    #[test]
    fn the_index_of_a_duplicate_is_read_from_mariadb_and_mysql_messages() {
        assert_eq!(
            duplicate_key_name("Duplicate entry '7' for key 'PRIMARY'"),
            Some("PRIMARY")
        );
        assert_eq!(
            duplicate_key_name("Duplicate entry 'a' for key 'accounts.PRIMARY'"),
            Some("PRIMARY")
        );
        assert_eq!(
            duplicate_key_name("Duplicate entry 'x@y' for key 'email'"),
            Some("email")
        );
        assert_eq!(duplicate_key_name("Data too long"), None);
    }
}
