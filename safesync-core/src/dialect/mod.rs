//! Every per-backend SQL difference lives here: identifier quoting,
//! placeholders, locking clauses, duplicate-safe inserts, and what the
//! backends' error codes mean.
//!
//! SQL is built from a record's static [`TableMeta`](crate::TableMeta), whose
//! identifiers the derive macros checked at compile time, so no identifier
//! ever comes from a runtime string.

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt::Write as _;

use crate::record::TableMeta;

/// The SQL dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// MySQL 8 and MariaDB 10.6+.
    MySql,
    /// PostgreSQL 13+.
    Postgres,
}

impl Dialect {
    pub(crate) const COUNT: usize = 3;

    pub(crate) fn index(self) -> usize {
        match self {
            Dialect::Sqlite => 0,
            Dialect::MySql => 1,
            Dialect::Postgres => 2,
        }
    }

    pub(crate) fn quote(self, out: &mut String, ident: &str) {
        // SQLite reads a double-quoted name that is not a column as a string
        // literal ("version" would silently become the text 'version'), so
        // it gets backticks, which are only ever identifiers.
        let q = if self == Dialect::Postgres { '"' } else { '`' };
        out.push(q);
        out.push_str(ident);
        out.push(q);
    }

    pub(crate) fn table(self, out: &mut String, meta: &TableMeta) {
        if let Some(schema) = meta.schema {
            self.quote(out, schema);
            out.push('.');
        }
        self.quote(out, meta.table);
    }

    fn placeholder(self, out: &mut String, n: &mut usize) {
        *n += 1;
        if self == Dialect::Postgres {
            let _ = write!(out, "${n}");
        } else {
            out.push('?');
        }
    }

    fn column_list(self, out: &mut String, meta: &TableMeta) {
        for (i, c) in meta.columns.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.quote(out, c);
        }
    }

    /// ` WHERE k1 = ? AND k2 = ?`
    fn where_key(self, out: &mut String, meta: &TableMeta, n: &mut usize) {
        out.push_str(" WHERE ");
        for (i, &k) in meta.key.iter().enumerate() {
            if i > 0 {
                out.push_str(" AND ");
            }
            self.quote(out, meta.columns[k]);
            out.push_str(" = ");
            self.placeholder(out, n);
        }
    }

    fn and_version(self, out: &mut String, meta: &TableMeta, n: &mut usize) {
        if let Some(v) = meta.version {
            out.push_str(" AND ");
            self.quote(out, meta.columns[v]);
            out.push_str(" = ");
            self.placeholder(out, n);
        }
    }

    fn select(self, meta: &TableMeta) -> String {
        let mut s = String::from("SELECT ");
        self.column_list(&mut s, meta);
        s.push_str(" FROM ");
        self.table(&mut s, meta);
        self.where_key(&mut s, meta, &mut 0);
        s
    }

    fn insert(self, meta: &TableMeta) -> String {
        let mut s = String::from("INSERT INTO ");
        self.table(&mut s, meta);
        s.push_str(" (");
        self.column_list(&mut s, meta);
        s.push_str(") VALUES (");
        let mut n = 0;
        for i in 0..meta.columns.len() {
            if i > 0 {
                s.push_str(", ");
            }
            self.placeholder(&mut s, &mut n);
        }
        s.push(')');
        s
    }

    /// Builds every statement a record needs, for this dialect.
    pub(crate) fn statements(self, meta: &TableMeta) -> Sql {
        let find = self.select(meta);
        let insert = self.insert(meta);

        // Duplicate-safe insert. Never INSERT IGNORE / INSERT OR IGNORE: those
        // also swallow NOT NULL, CHECK and foreign-key errors.
        let insert_idempotent = match self {
            // MySQL has no conflict target: a plain INSERT whose error 1062 is
            // recognised (and confirmed to be this key) by the caller.
            Dialect::MySql => insert.clone(),
            Dialect::Sqlite | Dialect::Postgres => {
                let mut s = insert.clone();
                s.push_str(" ON CONFLICT (");
                for (i, &k) in meta.key.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    self.quote(&mut s, meta.columns[k]);
                }
                s.push_str(") DO NOTHING");
                s
            }
        };

        // UPDATE t SET c = ?, …, v = v + 1 WHERE k = ? AND v = ?
        let mut update = String::from("UPDATE ");
        self.table(&mut update, meta);
        update.push_str(" SET ");
        let mut n = 0;
        let mut first = true;
        for (i, c) in meta.columns.iter().enumerate() {
            if meta.key.contains(&i) || meta.version == Some(i) {
                continue;
            }
            if !first {
                update.push_str(", ");
            }
            first = false;
            self.quote(&mut update, c);
            update.push_str(" = ");
            self.placeholder(&mut update, &mut n);
        }
        if let Some(v) = meta.version {
            if !first {
                update.push_str(", ");
            }
            first = false;
            self.quote(&mut update, meta.columns[v]);
            update.push_str(" = ");
            self.quote(&mut update, meta.columns[v]);
            update.push_str(" + 1");
        }
        if first {
            // Nothing but the key: a no-op assignment keeps the statement
            // valid and still reports whether the row exists.
            let k = meta.columns[meta.key[0]];
            self.quote(&mut update, k);
            update.push_str(" = ");
            self.quote(&mut update, k);
        }
        self.where_key(&mut update, meta, &mut n);
        self.and_version(&mut update, meta, &mut n);

        let mut delete = String::from("DELETE FROM ");
        self.table(&mut delete, meta);
        let mut n = 0;
        self.where_key(&mut delete, meta, &mut n);
        self.and_version(&mut delete, meta, &mut n);

        // After an UPDATE/DELETE matched nothing: is the row gone, or at
        // another version? MySQL's REPEATABLE READ would answer from the old
        // snapshot, so there the probe is a current (locking) read.
        let mut probe = String::from("SELECT ");
        match meta.version {
            Some(v) => self.quote(&mut probe, meta.columns[v]),
            None => probe.push('1'),
        }
        probe.push_str(" FROM ");
        self.table(&mut probe, meta);
        self.where_key(&mut probe, meta, &mut 0);
        if self == Dialect::MySql {
            probe.push_str(" LOCK IN SHARE MODE");
        }

        let (lock, lock_nowait, lock_skip_locked) = match self {
            // SQLite has no row locks: every safesync transaction on SQLite
            // is BEGIN IMMEDIATE and holds the database's write lock, so a
            // plain SELECT inside it is already exclusive.
            Dialect::Sqlite => (find.clone(), find.clone(), find.clone()),
            Dialect::MySql | Dialect::Postgres => (
                format!("{find} FOR UPDATE"),
                format!("{find} FOR UPDATE NOWAIT"),
                format!("{find} FOR UPDATE SKIP LOCKED"),
            ),
        };

        Sql {
            find,
            insert,
            insert_idempotent,
            update,
            delete,
            probe,
            lock,
            lock_nowait,
            lock_skip_locked,
        }
    }
}

/// The statements of one record type in one dialect.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) find: String,
    pub(crate) insert: String,
    pub(crate) insert_idempotent: String,
    pub(crate) update: String,
    pub(crate) delete: String,
    pub(crate) probe: String,
    pub(crate) lock: String,
    pub(crate) lock_nowait: String,
    pub(crate) lock_skip_locked: String,
}

/// What a database error means to safesync, across backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // reason: which variants are produced depends on the enabled backends
pub(crate) enum DbErrorKind {
    /// Unique or primary-key violation.
    Duplicate,
    /// Deadlock or serialisation failure: the transaction was rolled back.
    Deadlock,
    /// Gave up waiting for a row lock.
    LockWaitTimeout,
    /// `NOWAIT` found the row locked.
    LockNotAvailable,
    /// SQLite busy / locked.
    Busy,
}

/// Classifies a driver error by backend error code.
pub(crate) fn classify(err: &sqlx::Error) -> Option<DbErrorKind> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    #[cfg(feature = "mysql")]
    if let Some(e) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql::classify(e.number());
    }
    #[cfg(feature = "postgres")]
    if let Some(e) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return postgres::classify(e.code());
    }
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return sqlite::classify(db.code().as_deref());
    }
    let _ = db;
    None
}

#[cfg(test)]
mod tests {
    use super::Dialect;
    use crate::record::TableMeta;

    const META: TableMeta = TableMeta {
        table: "accounts",
        schema: None,
        columns: &["id", "owner", "balance", "version"],
        key: &[0],
        version: Some(3),
    };

    #[test]
    fn mysql_versioned_update_checks_the_version_in_the_statement() {
        let s = Dialect::MySql.statements(&META);
        assert_eq!(
            s.update,
            "UPDATE `accounts` SET `owner` = ?, `balance` = ?, `version` = `version` + 1 \
             WHERE `id` = ? AND `version` = ?"
        );
        assert_eq!(s.insert_idempotent, s.insert);
        assert!(s.lock_nowait.ends_with("FOR UPDATE NOWAIT"));
    }

    #[test]
    fn postgres_numbers_placeholders_and_uses_on_conflict() {
        let s = Dialect::Postgres.statements(&META);
        assert_eq!(
            s.update,
            "UPDATE \"accounts\" SET \"owner\" = $1, \"balance\" = $2, \"version\" = \"version\" + 1 \
             WHERE \"id\" = $3 AND \"version\" = $4"
        );
        assert_eq!(
            s.insert_idempotent,
            "INSERT INTO \"accounts\" (\"id\", \"owner\", \"balance\", \"version\") \
             VALUES ($1, $2, $3, $4) ON CONFLICT (\"id\") DO NOTHING"
        );
        assert_eq!(
            s.lock_skip_locked,
            "SELECT \"id\", \"owner\", \"balance\", \"version\" FROM \"accounts\" \
             WHERE \"id\" = $1 FOR UPDATE SKIP LOCKED"
        );
    }

    #[test]
    fn sqlite_never_uses_insert_or_ignore() {
        let s = Dialect::Sqlite.statements(&META);
        assert!(!s.insert_idempotent.contains("IGNORE"));
        assert!(
            s.insert_idempotent
                .ends_with("ON CONFLICT (`id`) DO NOTHING")
        );
        assert!(!s.lock.contains("FOR UPDATE"));
    }

    #[test]
    fn composite_key_without_version() {
        const M: TableMeta = TableMeta {
            table: "memberships",
            schema: Some("app"),
            columns: &["org", "user_id", "role"],
            key: &[0, 1],
            version: None,
        };
        let s = Dialect::Postgres.statements(&M);
        assert_eq!(
            s.update,
            "UPDATE \"app\".\"memberships\" SET \"role\" = $1 WHERE \"org\" = $2 AND \"user_id\" = $3"
        );
        assert_eq!(
            s.delete,
            "DELETE FROM \"app\".\"memberships\" WHERE \"org\" = $1 AND \"user_id\" = $2"
        );
        assert_eq!(
            s.probe,
            "SELECT 1 FROM \"app\".\"memberships\" WHERE \"org\" = $1 AND \"user_id\" = $2"
        );
    }
}
