//! The SQL text of a record's statements, built once per backend from its
//! static [`TableMeta`](crate::TableMeta) with that backend's spellings.
//!
//! Identifiers come from the metadata, which the derive macros checked at
//! compile time, so no identifier ever comes from a runtime string.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::record::TableMeta;

/// The statements of one record type on one backend.
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

/// `Err` naming what is wrong when `meta` cannot describe a record (a
/// hand-written `Table` impl): no key, or an index out of range.
pub(crate) fn check(meta: &TableMeta) -> Result<()> {
    let bad = |what: String| {
        Err(Error::Config(format!(
            "`Table::META` of `{}` {what}",
            meta.table
        )))
    };
    if meta.key.is_empty() {
        return bad("has an empty `key`: a record needs at least one key column".into());
    }
    let n = meta.columns.len();
    if let Some(i) = meta
        .key
        .iter()
        .chain(meta.version.iter())
        .find(|&&i| i >= n)
    {
        return bad(format!(
            "names column index {i}, but `columns` has only {n} entries"
        ));
    }
    Ok(())
}

/// Appends `ident` quoted on backend `B`.
pub(crate) fn quote<B: Backend>(out: &mut String, ident: &str) {
    out.push(B::QUOTE);
    out.push_str(ident);
    out.push(B::QUOTE);
}

/// Appends the record's table, with its schema, quoted on backend `B`.
pub(crate) fn table<B: Backend>(out: &mut String, meta: &TableMeta) {
    if let Some(schema) = meta.schema {
        quote::<B>(out, schema);
        out.push('.');
    }
    quote::<B>(out, meta.table);
}

struct Writer<B> {
    out: String,
    n: usize,
    _backend: std::marker::PhantomData<B>,
}

impl<B: Backend> Writer<B> {
    fn new(start: &str) -> Self {
        Writer {
            out: start.to_owned(),
            n: 0,
            _backend: std::marker::PhantomData,
        }
    }

    fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn quote(&mut self, ident: &str) {
        quote::<B>(&mut self.out, ident);
    }

    fn table(&mut self, meta: &TableMeta) {
        table::<B>(&mut self.out, meta);
    }

    fn placeholder(&mut self) {
        self.n += 1;
        B::placeholder(&mut self.out, self.n);
    }

    fn list(&mut self, meta: &TableMeta, indexes: impl Iterator<Item = usize>) {
        for (i, c) in indexes.enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.quote(meta.columns[c]);
        }
    }

    /// ` WHERE k1 = ? AND k2 = ?`
    fn where_key(&mut self, meta: &TableMeta) {
        self.push(" WHERE ");
        for (i, &k) in meta.key.iter().enumerate() {
            if i > 0 {
                self.push(" AND ");
            }
            self.quote(meta.columns[k]);
            self.push(" = ");
            self.placeholder();
        }
    }

    fn and_version(&mut self, meta: &TableMeta) {
        if let Some(v) = meta.version {
            self.push(" AND ");
            self.quote(meta.columns[v]);
            self.push(" = ");
            self.placeholder();
        }
    }
}

/// Builds every statement a record needs, on backend `B`. `meta` passed
/// [`check`].
pub(crate) fn statements<B: Backend>(meta: &TableMeta) -> Sql {
    let all = 0..meta.columns.len();

    let mut find = Writer::<B>::new("SELECT ");
    find.list(meta, all.clone());
    find.push(" FROM ");
    find.table(meta);
    find.where_key(meta);
    let find = find.out;

    let mut insert = Writer::<B>::new("INSERT INTO ");
    insert.table(meta);
    insert.push(" (");
    insert.list(meta, all.clone());
    insert.push(") VALUES (");
    for i in all {
        if i > 0 {
            insert.push(", ");
        }
        insert.placeholder();
    }
    insert.push(")");
    let insert = insert.out;

    // Duplicate-safe insert. Never INSERT IGNORE / INSERT OR IGNORE: those
    // also swallow NOT NULL, CHECK and foreign-key errors.
    let insert_idempotent = if B::ON_CONFLICT_DO_NOTHING {
        let mut s = Writer::<B>::new(&insert);
        s.push(" ON CONFLICT (");
        s.list(meta, meta.key.iter().copied());
        s.push(") DO NOTHING");
        s.out
    } else {
        insert.clone()
    };

    // UPDATE t SET c = ?, …, v = v + 1 WHERE k = ? AND v = ?
    let mut update = Writer::<B>::new("UPDATE ");
    update.table(meta);
    update.push(" SET ");
    let mut first = true;
    for (i, c) in meta.columns.iter().enumerate() {
        if meta.key.contains(&i) || meta.version == Some(i) {
            continue;
        }
        if !first {
            update.push(", ");
        }
        first = false;
        update.quote(c);
        update.push(" = ");
        update.placeholder();
    }
    if let Some(v) = meta.version {
        if !first {
            update.push(", ");
        }
        first = false;
        update.quote(meta.columns[v]);
        update.push(" = ");
        update.quote(meta.columns[v]);
        update.push(" + 1");
    }
    if first {
        // Nothing but the key: a no-op assignment keeps the statement
        // valid and still reports whether the row exists.
        let k = meta.columns[meta.key[0]];
        update.quote(k);
        update.push(" = ");
        update.quote(k);
    }
    update.where_key(meta);
    update.and_version(meta);

    let mut delete = Writer::<B>::new("DELETE FROM ");
    delete.table(meta);
    delete.where_key(meta);
    delete.and_version(meta);

    // After an UPDATE/DELETE matched nothing: is the row gone, or at
    // another version? (MySQL's REPEATABLE READ would answer from the old
    // snapshot, so there the probe is a current, locking, read.)
    let mut probe = Writer::<B>::new("SELECT ");
    match meta.version {
        Some(v) => probe.quote(meta.columns[v]),
        None => probe.push("1"),
    }
    probe.push(" FROM ");
    probe.table(meta);
    probe.where_key(meta);
    probe.push(B::PROBE_SUFFIX);

    // Without row locks (SQLite) a plain read inside the transaction is
    // already exclusive.
    let locks = B::ROW_LOCKS;
    let with = |clause: fn(&crate::backend::RowLocks) -> &'static str| match &locks {
        Some(l) => format!("{find}{}", clause(l)),
        None => find.clone(),
    };
    let (lock, lock_nowait, lock_skip_locked) = (
        with(|l| l.wait),
        with(|l| l.nowait),
        with(|l| l.skip_locked),
    );

    Sql {
        find,
        insert,
        insert_idempotent,
        update: update.out,
        delete: delete.out,
        probe: probe.out,
        lock,
        lock_nowait,
        lock_skip_locked,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::check;
    use crate::record::TableMeta;

    /// A versioned record's table, for the backends' SQL tests.
    pub(crate) const META: TableMeta = TableMeta {
        table: "accounts",
        schema: None,
        columns: &["id", "owner", "balance", "version"],
        key: &[0],
        version: Some(3),
    };

    #[test]
    fn a_meta_without_key_or_with_a_bad_index_is_a_config_error() {
        const NO_KEY: TableMeta = TableMeta {
            table: "t",
            schema: None,
            columns: &["a"],
            key: &[],
            version: None,
        };
        const BAD_VERSION: TableMeta = TableMeta {
            table: "t",
            schema: None,
            columns: &["a"],
            key: &[0],
            version: Some(1),
        };
        let err = check(&NO_KEY).unwrap_err().to_string();
        assert!(err.contains("`t`") && err.contains("empty `key`"), "{err}");
        let err = check(&BAD_VERSION).unwrap_err().to_string();
        assert!(err.contains("column index 1"), "{err}");
        assert!(check(&META).is_ok());
    }
}
