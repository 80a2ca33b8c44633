//! The table of a record, from the struct: [`Db::create_table`] writes its
//! DDL, [`Db::check_table`] compares it with the live table.
//!
//! The derives describe each stored field with [`SqlType`] (a
//! backend-neutral [`ColumnType`] and whether it is nullable); each backend's
//! file (`backend/<name>/schema.rs`) turns that into its DDL type, and reads its catalog into a
//! [`LiveTable`] that [`compare`] checks against the struct.
//!
//! | Rust | SQLite | MySQL / MariaDB | PostgreSQL |
//! |---|---|---|---|
//! | `i16` | `INTEGER` | `SMALLINT` | `SMALLINT` |
//! | `i32` | `INTEGER` | `INT` | `INTEGER` |
//! | `i64` | `INTEGER` | `BIGINT` | `BIGINT` |
//! | `f32` | `REAL` | `FLOAT` | `REAL` |
//! | `f64` | `REAL` | `DOUBLE` | `DOUBLE PRECISION` |
//! | `bool` | `BOOLEAN` | `BOOLEAN` (`TINYINT(1)`) | `BOOLEAN` |
//! | `String` | `TEXT` | `LONGTEXT`; `VARCHAR(255)` in a key | `TEXT` |
//! | `Vec<u8>` | `BLOB` | `LONGBLOB`; `VARBINARY(255)` in a key | `BYTEA` |
//! | `Option<T>` | `T`'s type, nullable | the same | the same |

use std::fmt;

use futures_core::future::BoxFuture;

use crate::backend::{Backend, on_pool};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::record::{Table, TableMeta};
use crate::sql;

/// The backend-neutral type of a column; each backend maps it to its own
/// DDL type (see [`Db::create_table`] for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnType {
    /// A 16-bit signed integer (`i16`).
    SmallInt,
    /// A 32-bit signed integer (`i32`).
    Int,
    /// A 64-bit signed integer (`i64`).
    BigInt,
    /// A 32-bit float (`f32`).
    Real,
    /// A 64-bit float (`f64`).
    Double,
    /// A boolean (`bool`).
    Bool,
    /// Text of any length (`String`).
    Text,
    /// Bytes of any length (`Vec<u8>`).
    Bytes,
}

/// The SQL column a field's type is stored in, for [`Db::create_table`] and
/// [`Db::check_table`].
///
/// Implemented for `i16`, `i32`, `i64`, `f32`, `f64`, `bool`, `String`,
/// `Vec<u8>` and `Option` of each (a nullable column). Implement it for a
/// type of your own that sqlx stores (it also needs sqlx's `Type`, `Encode`
/// and `Decode`) to use these calls on records holding it.
///
/// ```
/// use safesync_core::{ColumnType, SqlType};
///
/// /// Cents, stored as a BIGINT.
/// struct Cents(i64);
///
/// impl SqlType for Cents {
///     const COLUMN: ColumnType = ColumnType::BigInt;
/// }
/// assert!(<Option<Cents> as SqlType>::NULLABLE); // `Option<Cents>` comes with it
/// ```
#[diagnostic::on_unimplemented(
    message = "safesync knows no SQL column type for `{Self}`, so `create_table` and `check_table` cannot describe this field",
    label = "no SQL column type",
    note = "the types with one: i16, i32, i64, f32, f64, bool, String, Vec<u8> and `Option`s of them",
    note = "implement `safesync::SqlType` for `{Self}` (a `ColumnType`), or write this table's DDL by hand"
)]
pub trait SqlType {
    /// The column's type.
    const COLUMN: ColumnType;
    /// Whether the column may hold NULL (`Option<T>`).
    const NULLABLE: bool = false;
}

macro_rules! sql_type {
    ($($t:ty => $c:ident),* $(,)?) => {$(
        impl SqlType for $t {
            const COLUMN: ColumnType = ColumnType::$c;
        }
    )*};
}
sql_type!(
    i16 => SmallInt,
    i32 => Int,
    i64 => BigInt,
    f32 => Real,
    f64 => Double,
    bool => Bool,
    String => Text,
    Vec<u8> => Bytes,
);

impl<T: SqlType> SqlType for Option<T> {
    const COLUMN: ColumnType = T::COLUMN;
    const NULLABLE: bool = true;
}

/// One stored field, as the derive describes it.
#[doc(hidden)]
#[derive(Debug)]
pub struct ColumnDef {
    /// The field's name.
    pub field: &'static str,
    /// The field's Rust type, as written.
    pub rust_type: &'static str,
    /// Its column type.
    pub ty: ColumnType,
    /// Whether it is an `Option`.
    pub nullable: bool,
}

/// The columns of a record, in `TableMeta::columns` order.
#[doc(hidden)]
#[derive(Debug)]
pub struct SchemaMeta {
    /// The struct's name.
    pub record: &'static str,
    /// One per stored field.
    pub columns: &'static [ColumnDef],
}

/// A record whose table [`Db::create_table`] can write and
/// [`Db::check_table`] can check. Implemented by the derives when every
/// stored field's type implements [`SqlType`].
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` has a field whose type has no SQL column type, so safesync cannot create or check its table",
    label = "a field of `{Self}` has no `SqlType`",
    note = "the types with one: i16, i32, i64, f32, f64, bool, String, Vec<u8> and `Option`s of them; implement `safesync::SqlType` for your own, or write this table's DDL by hand"
)]
pub trait TableSchema: Table {
    /// The columns' types.
    const SCHEMA: &'static SchemaMeta;
}

/// One way the live table differs from the struct, in
/// [`Error::Schema`](crate::Error::Schema).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// The table does not exist.
    MissingTable,
    /// A field's column does not exist.
    MissingColumn {
        /// The column.
        column: &'static str,
        /// The field and its type, `name: Type`.
        field: String,
        /// The DDL type `create_table` would give it.
        expected: &'static str,
    },
    /// A column's type cannot hold its field (TEXT for an `i64`).
    WrongType {
        /// The column.
        column: &'static str,
        /// The field and its type, `name: Type`.
        field: String,
        /// The column's type, as the catalog shows it.
        found: String,
        /// The DDL type `create_table` would give it.
        expected: &'static str,
    },
    /// A column may hold NULL but its field is not an `Option`.
    Nullable {
        /// The column.
        column: &'static str,
        /// The field and its type, `name: Type`.
        field: String,
    },
    /// The key columns are neither the primary key nor a unique index, so
    /// conflicts and idempotent inserts cannot rely on them.
    KeyNotUnique {
        /// The key's columns.
        columns: Vec<&'static str>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingTable => f.write_str("the table does not exist"),
            Mismatch::MissingColumn {
                column,
                field,
                expected,
            } => write!(
                f,
                "column `{column}` is missing (field `{field}`, expected {expected})"
            ),
            Mismatch::WrongType {
                column,
                field,
                found,
                expected,
            } => write!(
                f,
                "column `{column}` is {found}, which cannot hold field `{field}` (expected {expected})"
            ),
            Mismatch::Nullable { column, field } => write!(
                f,
                "column `{column}` allows NULL but field `{field}` is not an `Option` (add NOT NULL)"
            ),
            Mismatch::KeyNotUnique { columns } => {
                f.write_str("key (")?;
                for (i, c) in columns.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{c}`")?;
                }
                f.write_str(") is neither the primary key nor a unique index")
            }
        }
    }
}

/// The mismatches of [`Error::Schema`](crate::Error::Schema), `; `-separated.
pub(crate) struct Mismatches<'a>(pub(crate) &'a [Mismatch]);

impl fmt::Display for Mismatches<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// A column of the live table, as its backend's catalog shows it.
#[derive(Debug)]
pub(crate) struct LiveColumn {
    pub(crate) name: String,
    /// The declared type, as the catalog spells it (`bigint`, `varchar(64)`).
    pub(crate) sql_type: String,
    pub(crate) nullable: bool,
}

/// The live table: its columns, and the column sets that are unique (the
/// primary key and every full, unique index or constraint).
#[derive(Debug, Default)]
pub(crate) struct LiveTable {
    pub(crate) columns: Vec<LiveColumn>,
    pub(crate) unique: Vec<Vec<String>>,
}

impl LiveTable {
    /// Adds the catalog's (index, column) rows, ordered by index and then
    /// position. An index with a column that is not a whole column (`None`:
    /// an expression, a prefix) is left out: it is not unique on the
    /// columns it names.
    pub(crate) fn add_unique_rows(&mut self, rows: Vec<(String, Option<String>)>) {
        let mut current: Option<(String, Option<Vec<String>>)> = None;
        for (index, column) in rows {
            if current.as_ref().is_none_or(|(name, _)| *name != index) {
                if let Some((_, Some(columns))) = current.take() {
                    self.unique.push(columns);
                }
                current = Some((index, Some(Vec::new())));
            }
            if let Some((_, columns)) = current.as_mut() {
                match column {
                    Some(c) => {
                        if let Some(cols) = columns.as_mut() {
                            cols.push(c);
                        }
                    }
                    None => *columns = None,
                }
            }
        }
        if let Some((_, Some(columns))) = current {
            self.unique.push(columns);
        }
    }
}

/// Whether two column names are the same column on backend `B`.
fn same_column<B: Backend>(a: &str, b: &str) -> bool {
    if B::CASE_SENSITIVE_NAMES {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

/// `CREATE TABLE IF NOT EXISTS` for a record, on backend `B`.
pub(crate) fn create_table_sql<B: Backend>(meta: &TableMeta, schema: &SchemaMeta) -> String {
    let mut s = String::from("CREATE TABLE IF NOT EXISTS ");
    sql::table::<B>(&mut s, meta);
    s.push_str(" (");
    for (i, (name, def)) in meta.columns.iter().zip(schema.columns).enumerate() {
        let in_key = meta.key.contains(&i);
        if i > 0 {
            s.push_str(", ");
        }
        sql::quote::<B>(&mut s, name);
        s.push(' ');
        s.push_str(B::ddl_type(def.ty, in_key));
        s.push_str(if def.nullable && !in_key {
            " NULL"
        } else {
            " NOT NULL"
        });
    }
    s.push_str(", PRIMARY KEY (");
    for (i, &k) in meta.key.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        sql::quote::<B>(&mut s, meta.columns[k]);
    }
    s.push_str("))");
    s.push_str(B::TABLE_OPTIONS);
    s
}

/// Every difference between the struct and the live table, on backend `B`.
pub(crate) fn compare<B: Backend>(
    meta: &TableMeta,
    schema: &SchemaMeta,
    live: Option<&LiveTable>,
) -> Vec<Mismatch> {
    let Some(live) = live else {
        return vec![Mismatch::MissingTable];
    };
    let mut out = Vec::new();
    for (i, (&column, def)) in meta.columns.iter().zip(schema.columns).enumerate() {
        let field = format!("{}: {}", def.field, def.rust_type);
        let expected = B::ddl_type(def.ty, meta.key.contains(&i));
        let Some(found) = live
            .columns
            .iter()
            .find(|c| same_column::<B>(&c.name, column))
        else {
            out.push(Mismatch::MissingColumn {
                column,
                field,
                expected,
            });
            continue;
        };
        if !B::holds(def.ty, &found.sql_type) {
            out.push(Mismatch::WrongType {
                column,
                field: field.clone(),
                found: found.sql_type.clone(),
                expected,
            });
        }
        if found.nullable && !def.nullable {
            out.push(Mismatch::Nullable { column, field });
        }
    }
    let key: Vec<&'static str> = meta.key.iter().map(|&k| meta.columns[k]).collect();
    let key_is_unique = live.unique.iter().any(|cols| {
        cols.len() == key.len()
            && key
                .iter()
                .all(|k| cols.iter().any(|c| same_column::<B>(c, k)))
    });
    if !key_is_unique {
        out.push(Mismatch::KeyNotUnique { columns: key });
    }
    out
}

/// The table's name as written in messages: `schema.table` or `table`.
fn qualified(meta: &TableMeta) -> String {
    match meta.schema {
        Some(schema) => format!("{schema}.{}", meta.table),
        None => meta.table.to_owned(),
    }
}

impl Db {
    /// Creates the record's table when it does not exist
    /// (`CREATE TABLE IF NOT EXISTS`): one column per stored field, in the
    /// backend's types, `NOT NULL` unless the field is an `Option`, and the
    /// key (one or several `#[safesync(key)]` fields) as the primary key.
    ///
    /// The Rust → SQL type map:
    ///
    /// | Rust | SQLite | MySQL / MariaDB | PostgreSQL |
    /// |---|---|---|---|
    /// | `i16` | `INTEGER` | `SMALLINT` | `SMALLINT` |
    /// | `i32` | `INTEGER` | `INT` | `INTEGER` |
    /// | `i64` | `INTEGER` | `BIGINT` | `BIGINT` |
    /// | `f32` | `REAL` | `FLOAT` | `REAL` |
    /// | `f64` | `REAL` | `DOUBLE` | `DOUBLE PRECISION` |
    /// | `bool` | `BOOLEAN` | `BOOLEAN` (`TINYINT(1)`) | `BOOLEAN` |
    /// | `String` | `TEXT` | `LONGTEXT`; `VARCHAR(255)` in a key | `TEXT` |
    /// | `Vec<u8>` | `BLOB` | `LONGBLOB`; `VARBINARY(255)` in a key | `BYTEA` |
    /// | `Option<T>` | `T`'s type, nullable | the same | the same |
    ///
    /// MySQL tables get `CHARACTER SET utf8mb4`, whose default collation
    /// compares text without regard to case: `"Acme"` and `"acme"` are the
    /// same key there (not on SQLite and PostgreSQL). An existing table is left as it
    /// is (check it with [`Db::check_table`]); a `schema = "…"` must exist.
    /// Only the types above (and your own [`SqlType`]s) can be created:
    /// another field type makes this call a compile error.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use safesync::prelude::*;
    ///
    /// #[derive(Debug, Clone, Versioned)]
    /// #[safesync(table = "accounts")]
    /// struct Account {
    ///     #[safesync(key)]
    ///     id: i64,
    ///     owner: String,
    ///     note: Option<String>,
    ///     #[safesync(version)]
    ///     version: i64,
    /// }
    ///
    /// let db = Db::connect("sqlite::memory:").await?;
    /// db.create_table::<Account>().await?;
    /// db.check_table::<Account>().await?;
    /// # Ok::<_, safesync::Error>(()) }).unwrap();
    /// ```
    pub fn create_table<T: TableSchema>(&self) -> BoxFuture<'_, Result<()>> {
        // A future whose type does not name `T`: a record without a
        // `TableSchema` is then one error, at this call, not one per use of
        // the future as well.
        let sql = on_pool!(self.pool(), |_p, DB| create_table_sql::<DB>(
            T::META,
            T::SCHEMA
        ));
        Box::pin(async move {
            self.execute(&sql).await?;
            Ok(())
        })
    }

    /// Compares the record's live table with the struct, for a check at
    /// startup: [`Error::Schema`] lists every mismatch at once — a missing
    /// table, a missing column, a column whose type cannot hold its field
    /// (`TEXT` for an `i64`), a column that allows NULL for a field that is
    /// not an `Option`, and a key that is neither the primary key nor a
    /// unique index (conflicts and idempotent inserts rely on it).
    ///
    /// Columns the struct does not name are ignored, as are wider types than
    /// needed where sqlx reads them back (a `BIGINT` for an `i32` on MySQL;
    /// PostgreSQL, where sqlx wants the exact type, is checked exactly).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use safesync::prelude::*;
    ///
    /// #[derive(Debug, Clone, Versioned)]
    /// #[safesync(table = "accounts")]
    /// struct Account {
    ///     #[safesync(key)]
    ///     id: i64,
    ///     balance: i64,
    ///     #[safesync(version)]
    ///     version: i64,
    /// }
    ///
    /// let db = Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE accounts (id INTEGER, balance TEXT, version INTEGER NOT NULL)").await?;
    /// let err = db.check_table::<Account>().await.unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "table `accounts` does not match struct `Account`: \
    ///      column `id` allows NULL but field `id: i64` is not an `Option` (add NOT NULL); \
    ///      column `balance` is TEXT, which cannot hold field `balance: i64` (expected INTEGER); \
    ///      column `balance` allows NULL but field `balance: i64` is not an `Option` (add NOT NULL); \
    ///      key (`id`) is neither the primary key nor a unique index"
    /// );
    /// # Ok::<_, safesync::Error>(()) }).unwrap();
    /// ```
    pub fn check_table<T: TableSchema>(&self) -> BoxFuture<'_, Result<()>> {
        // As in `create_table`, the future does not name `T`.
        let (meta, schema) = (T::META, T::SCHEMA);
        Box::pin(async move {
            let mismatches = on_pool!(self.pool(), |p, DB| {
                let live = <DB as Backend>::live_table(&p.pool, meta).await?;
                compare::<DB>(meta, schema, live.as_ref())
            });
            if mismatches.is_empty() {
                Ok(())
            } else {
                Err(Error::Schema {
                    record: schema.record,
                    table: qualified(meta),
                    mismatches,
                })
            }
        })
    }
}

#[cfg(all(test, feature = "sqlite", feature = "mysql", feature = "postgres"))]
mod tests;
