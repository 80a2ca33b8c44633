//! Statements and queries with bound parameters, on [`Tx`] and [`Db`], and
//! the record queries of [`Select`].
//!
//! Values never go into SQL text: they are bound to `?` placeholders, which
//! are spelled `?` on every backend (rewritten to `$1`, `$2`, … on
//! PostgreSQL, outside string literals, quoted identifiers and comments).
//! The number of `?` is checked against the number of values before the
//! statement is sent: a mismatch is [`Error::Query`] naming the statement.
//!
//! PostgreSQL's jsonb operators spelled with `?` (`?`, `?|`, `?&`) read as
//! placeholders; write their function forms (`jsonb_exists(col, ?)`).

mod params;
mod placeholders;

use std::future::Future;

use sqlx::{Database, Executor as _, Row as _};
use tracing::Instrument as _;

pub use params::{Params, Scalar, Value};

use crate::backend::on_tx;
use crate::backend::{Backend, Lexical, on_tx_backend};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::record::{Record, RowCodec};
use crate::tx::Tx;

fn encode_err(e: sqlx::error::BoxDynError) -> Error {
    Error::Database(sqlx::Error::Encode(e))
}

/// `sql` in the backend's placeholder spelling, once its `?` count matches
/// the `given` values.
fn prepare(sql: &str, lexical: Lexical, given: usize) -> Result<std::borrow::Cow<'_, str>> {
    let bad = |reason: String| Error::Query {
        sql: sql.to_owned(),
        reason,
    };
    let prepared =
        placeholders::prepare(sql, lexical).map_err(|what| bad(format!("it has {what}")))?;
    if prepared.placeholders != given {
        return Err(bad(format!(
            "it has {} `?` placeholder(s) but {given} value(s) were bound",
            prepared.placeholders
        )));
    }
    Ok(prepared.sql)
}

/// A failed decode of a query's result, naming the statement.
fn decode_err(sql: &str, e: &sqlx::Error) -> Error {
    Error::Decode {
        what: format!("the result of `{sql}`"),
        reason: e.to_string(),
    }
}

/// How many rows a query keeps.
#[derive(Clone, Copy)]
enum Rows {
    /// Every row.
    All,
    /// The first row, if any.
    First,
}

/// Runs `$sql` with `$params` bound on `$tx`'s connection, `$run` being the
/// sqlx call (`fetch_all`, …) and `$then` what to do with its output, with
/// `DB` bound to the backend.
macro_rules! bound {
    ($tx:expr, $sql:expr, $params:expr, |$out:ident, $DB:ident| $run:ident => $then:expr) => {{
        let params = $params;
        let text = prepare($sql, lexical(&$tx), params.count())?;
        let text: &str = &text;
        on_tx!($tx, |conn, $DB| {
            let mut args = <$DB as Database>::Arguments::default();
            params::Bind::<'_, $DB>::bind(params, &mut args).map_err(encode_err)?;
            let $out = conn.$run(sqlx::query_with(text, args)).await?;
            $then
        })
    }};
}

/// First column of each row, decoded.
async fn scalars<'q, S: Scalar>(
    tx: &mut Tx<'_>,
    sql: &str,
    params: impl Params<'q>,
    rows: Rows,
) -> Result<Vec<S>> {
    macro_rules! decode {
        ($rows:expr) => {
            $rows
                .iter()
                .map(|row| row.try_get::<S, usize>(0).map_err(|e| decode_err(sql, &e)))
                .collect()
        };
    }
    match rows {
        Rows::All => bound!(tx, sql, params, |out, DB| fetch_all => decode!(out)),
        Rows::First => bound!(tx, sql, params, |out, DB| fetch_optional => decode!(out)),
    }
}

/// Statements with bound values, in this transaction.
impl Tx<'_> {
    /// Runs one statement with `params` bound to its `?` placeholders, in
    /// order; returns the rows affected.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)").await?;
    /// let mut tx = db.begin().await?;
    /// let body = "it's; DROP TABLE notes; --";   // stays a value
    /// tx.execute_with("INSERT INTO notes (id, body) VALUES (?, ?)", (1, body)).await?;
    /// let n = tx.execute_with("UPDATE notes SET body = ? WHERE id = ?", ("hi", 1)).await?;
    /// assert_eq!(n, 1);
    /// tx.commit().await?;
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn execute_with<'q>(&mut self, sql: &str, params: impl Params<'q>) -> Result<u64> {
        bound!(self, sql, params, |out, DB| execute => Ok(out.rows_affected()))
    }

    /// The first column of the first row: a count, a sum, one value.
    /// No row is [`Error::NotFound`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").await?;
    /// let mut tx = db.begin().await?;
    /// let n = tx.fetch_one::<i64>("SELECT COUNT(*) FROM t WHERE id > ?", (0,)).await?;
    /// assert_eq!(n, 0);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn fetch_one<S: Scalar>(&mut self, sql: &str, params: impl Params<'_>) -> Result<S> {
        self.fetch_optional(sql, params)
            .await?
            .ok_or_else(|| Error::NotFound {
                table: None,
                key: Some(format!("a row of `{sql}`")),
            })
    }

    /// The first column of the first row, or `None` when there is no row.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT)").await?;
    /// let mut tx = db.begin().await?;
    /// let name = tx.fetch_optional::<String>("SELECT name FROM t WHERE id = ?", (7,)).await?;
    /// assert_eq!(name, None);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn fetch_optional<S: Scalar>(
        &mut self,
        sql: &str,
        params: impl Params<'_>,
    ) -> Result<Option<S>> {
        Ok(scalars(self, sql, params, Rows::First).await?.pop())
    }

    /// The first column of every row.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").await?;
    /// db.execute("INSERT INTO t VALUES (1), (2), (3)").await?;
    /// let mut tx = db.begin().await?;
    /// let ids = tx.fetch_all::<i64>("SELECT id FROM t WHERE id >= ? ORDER BY id", (2,)).await?;
    /// assert_eq!(ids, [2, 3]);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn fetch_all<S: Scalar>(
        &mut self,
        sql: &str,
        params: impl Params<'_>,
    ) -> Result<Vec<S>> {
        scalars(self, sql, params, Rows::All).await
    }
}

/// The same calls outside a transaction you hold: each runs in a
/// transaction of its own, committed when it succeeds.
impl Db {
    /// [`Tx::execute_with`] in a transaction of its own.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)").await?;
    /// db.execute_with("INSERT INTO t (id, n) VALUES (?, ?)", (1, 10)).await?;
    /// assert_eq!(db.fetch_one::<i64>("SELECT n FROM t WHERE id = ?", (1,)).await?, 10);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn execute_with<'q>(&self, sql: &str, params: impl Params<'q>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = tx.execute_with(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// [`Tx::fetch_one`] in a transaction of its own.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").await?;
    /// db.execute("INSERT INTO t VALUES (1), (2)").await?;
    /// assert_eq!(db.fetch_one::<i64>("SELECT COUNT(*) FROM t WHERE id > ?", (0,)).await?, 2);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn fetch_one<S: Scalar>(&self, sql: &str, params: impl Params<'_>) -> Result<S> {
        let mut tx = self.begin().await?;
        let v = tx.fetch_one(sql, params).await?;
        tx.commit().await?;
        Ok(v)
    }

    /// [`Tx::fetch_optional`] in a transaction of its own.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").await?;
    /// db.execute("INSERT INTO t VALUES (1), (2)").await?;
    /// assert_eq!(db.fetch_optional::<i64>("SELECT id FROM t WHERE id = ?", (3,)).await?, None);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn fetch_optional<S: Scalar>(
        &self,
        sql: &str,
        params: impl Params<'_>,
    ) -> Result<Option<S>> {
        let mut tx = self.begin().await?;
        let v = tx.fetch_optional(sql, params).await?;
        tx.commit().await?;
        Ok(v)
    }

    /// [`Tx::fetch_all`] in a transaction of its own.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = safesync_core::Db::connect("sqlite::memory:").await?;
    /// db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").await?;
    /// db.execute("INSERT INTO t VALUES (1), (2)").await?;
    /// assert_eq!(db.fetch_all::<i64>("SELECT id FROM t ORDER BY id DESC", ()).await?, [2, 1]);
    /// # Ok::<_, safesync_core::Error>(()) }).unwrap();
    /// ```
    pub async fn fetch_all<S: Scalar>(&self, sql: &str, params: impl Params<'_>) -> Result<Vec<S>> {
        let mut tx = self.begin().await?;
        let v = tx.fetch_all(sql, params).await?;
        tx.commit().await?;
        Ok(v)
    }
}

/// The placeholder rules of `tx`'s backend.
fn lexical(tx: &Tx<'_>) -> Lexical {
    on_tx_backend!(tx, |DB| <DB as Backend>::LEXICAL)
}

/// The most values one statement may bind on `tx`'s backend.
fn max_params(tx: &Tx<'_>) -> usize {
    on_tx_backend!(tx, |DB| <DB as Backend>::MAX_PARAMS)
}

/// `SELECT <T's columns> FROM <T's table>`, and T's quoted key columns:
/// taken from T's `find` (`… WHERE k1 = ? AND k2 = ?`), whose
/// identifiers are plain, so `" WHERE "`, `" AND "` and `" = "` occur in
/// it only as written by the statement builder.
fn select_parts(find: &str) -> (&str, Vec<&str>) {
    let (prefix, cond) = find.split_once(" WHERE ").unwrap_or((find, ""));
    let keys = cond
        .split(" AND ")
        .filter_map(|c| c.split_once(" = ").map(|(col, _)| col))
        .collect();
    (prefix, keys)
}

/// Rows of `T` from `sql` (which selects `T`'s columns in `META` order).
async fn records<'q, T: Record>(
    tx: &mut Tx<'_>,
    sql: &str,
    params: impl Params<'q>,
    rows: Rows,
) -> Result<Vec<T>> {
    macro_rules! decode {
        ($rows:expr, $DB:ident) => {
            $rows
                .iter()
                .map(|row| <T as RowCodec<$DB>>::decode(row).map_err(|e| decode_err(sql, &e)))
                .collect()
        };
    }
    let span = tracing::debug_span!(parent: &tx.span, "safesync.record", table = T::META.table, op = "select");
    async {
        match rows {
            Rows::All => bound!(tx, sql, params, |out, DB| fetch_all => decode!(out, DB)),
            Rows::First => bound!(tx, sql, params, |out, DB| fetch_optional => decode!(out, DB)),
        }
    }
    .instrument(span)
    .await
}

/// `SELECT <T's columns> FROM <T's table> <rest>`.
fn select_sql(find: &str, rest: &str) -> String {
    let (prefix, _) = select_parts(find);
    if rest.trim().is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix} {rest}")
    }
}

/// Queries that decode rows into a derived record: the statement's
/// `SELECT <columns> FROM <table>` is written by safesync from the record,
/// so its columns are always the record's, in the order it decodes them;
/// you write only what follows, with `?` for every value.
///
/// Implemented for every record; `use safesync::prelude::*` imports it.
///
/// ```
/// use safesync_core::{Db, Select as _};
///
/// #[derive(Debug, safesync_macros::Locked)]
/// #[safesync(table = "accounts", crate = "safesync_core")]
/// struct Account {
///     #[safesync(key)]
///     id: i64,
///     balance: i64,
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = Db::connect("sqlite::memory:").await?;
/// db.execute("CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)").await?;
/// db.execute("INSERT INTO accounts VALUES (1, 50), (2, 0), (3, 70)").await?;
/// let mut tx = db.begin().await?;
///
/// // SELECT id, balance FROM accounts WHERE balance > ? ORDER BY id
/// let rich = Account::select_all(&mut tx, "WHERE balance > ? ORDER BY id", (10,)).await?;
/// assert_eq!(rich.iter().map(|a| a.id).collect::<Vec<_>>(), [1, 3]);
///
/// let some = Account::find_many(&mut tx, &[3, 9, 1]).await?; // one statement; 9 is absent
/// assert_eq!(some.iter().map(|a| a.id).collect::<Vec<_>>(), [1, 3]);
/// # Ok::<_, safesync_core::Error>(()) }).unwrap();
/// ```
pub trait Select: Record {
    /// Every row of `SELECT <columns> FROM <table> <rest>`, `rest` being
    /// e.g. `"WHERE balance > ? ORDER BY id"` (or `""` for all rows).
    fn select_all<'a, 'q, P: Params<'q> + 'a>(
        tx: &'a mut Tx<'_>,
        rest: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Vec<Self>>> + Send + 'a {
        async move {
            let sql = select_sql(&crate::ops::statements::<Self>(tx)?.find, rest);
            records(tx, &sql, params, Rows::All).await
        }
    }

    /// The first row of `SELECT <columns> FROM <table> <rest>`, or `None`.
    fn select_optional<'a, 'q, P: Params<'q> + 'a>(
        tx: &'a mut Tx<'_>,
        rest: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Option<Self>>> + Send + 'a {
        async move {
            let sql = select_sql(&crate::ops::statements::<Self>(tx)?.find, rest);
            Ok(records(tx, &sql, params, Rows::First).await?.pop())
        }
    }

    /// The first row of `SELECT <columns> FROM <table> <rest>`; no row is
    /// [`Error::NotFound`] naming the table.
    fn select_one<'a, 'q, P: Params<'q> + 'a>(
        tx: &'a mut Tx<'_>,
        rest: &'a str,
        params: P,
    ) -> impl Future<Output = Result<Self>> + Send + 'a {
        async move {
            Self::select_optional(tx, rest, params)
                .await?
                .ok_or(Error::NotFound {
                    table: Some(Self::META.table),
                    key: None,
                })
        }
    }

    /// The rows with these keys, in one statement
    /// (`WHERE key IN (?, ?, …)`; for a composite key,
    /// `WHERE (k1 = ? AND k2 = ?) OR …`), ordered by key. Absent keys are
    /// left out and a repeated key gives one row. More keys than the
    /// backend binds in one statement (32,766 values on SQLite, 65,535 on
    /// MySQL and PostgreSQL) is [`Error::Query`].
    fn find_many<'a>(
        tx: &'a mut Tx<'_>,
        keys: &'a [Self::Key],
    ) -> impl Future<Output = Result<Vec<Self>>> + Send + 'a {
        find_many(tx, keys)
    }
}

impl<T: Record> Select for T {}

async fn find_many<T: Record>(tx: &mut Tx<'_>, keys: &[T::Key]) -> Result<Vec<T>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = tx.dialect();
    let (prefix, key_cols) = select_parts(&crate::ops::statements::<T>(tx)?.find);
    let mut sql = String::with_capacity(prefix.len() + 16 + keys.len() * 4 * key_cols.len());
    sql.push_str(prefix);
    sql.push_str(" WHERE ");
    if let [col] = key_cols.as_slice() {
        sql.push_str(col);
        sql.push_str(" IN (");
        for i in 0..keys.len() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
    } else {
        for i in 0..keys.len() {
            sql.push_str(if i == 0 { "(" } else { " OR (" });
            for (j, col) in key_cols.iter().enumerate() {
                if j > 0 {
                    sql.push_str(" AND ");
                }
                sql.push_str(col);
                sql.push_str(" = ?");
            }
            sql.push(')');
        }
    }
    sql.push_str(" ORDER BY ");
    sql.push_str(&key_cols.join(", "));
    let values = keys.len() * key_cols.len();
    let max = max_params(tx);
    if values > max {
        return Err(Error::Query {
            sql: format!("find_many on `{}`", T::META.table),
            reason: format!(
                "{} keys need {values} bound values, more than the {max} one {dialect:?} statement takes: pass fewer keys per call",
                keys.len(),
            ),
        });
    }
    let text = prepare(&sql, lexical(tx), values)?;
    let text: &str = &text;
    let span = tracing::debug_span!(parent: &tx.span, "safesync.record", table = T::META.table, op = "find_many");
    async {
        on_tx!(tx, |conn, DB| {
            let mut args = <DB as Database>::Arguments::default();
            for key in keys {
                <T as RowCodec<DB>>::bind_key(key, &mut args).map_err(encode_err)?;
            }
            conn.fetch_all(sqlx::query_with(text, args))
                .await?
                .iter()
                .map(|row| <T as RowCodec<DB>>::decode(row).map_err(|e| decode_err(text, &e)))
                .collect()
        })
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::{select_parts, select_sql};
    use crate::record::{Statements, Table, TableMeta};
    use crate::sql::statements;

    struct Member;
    impl Table for Member {
        type Key = (i64, i64);
        const META: &'static TableMeta = &TableMeta {
            table: "members",
            schema: Some("app"),
            columns: &["org", "user_id", "role"],
            key: &[0, 1],
            version: None,
        };
        fn statements() -> &'static Statements {
            static S: Statements = Statements::new();
            &S
        }
        fn version(&self) -> Option<i64> {
            None
        }
        fn bump_version(&mut self) {}
        fn key_debug(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn select_text_is_built_from_the_record_in_every_dialect() {
        let pg = statements::<sqlx::Postgres>(Member::META);
        let (prefix, keys) = select_parts(&pg.find);
        assert_eq!(
            prefix,
            "SELECT \"org\", \"user_id\", \"role\" FROM \"app\".\"members\""
        );
        assert_eq!(keys, ["\"org\"", "\"user_id\""]);
        let my = statements::<sqlx::MySql>(Member::META);
        let (prefix, keys) = select_parts(&my.find);
        assert_eq!(
            prefix,
            "SELECT `org`, `user_id`, `role` FROM `app`.`members`"
        );
        assert_eq!(keys, ["`org`", "`user_id`"]);
        let lite = statements::<sqlx::Sqlite>(Member::META);
        assert_eq!(
            select_sql(&lite.find, "WHERE role = ?"),
            "SELECT `org`, `user_id`, `role` FROM `app`.`members` WHERE role = ?"
        );
        assert_eq!(
            select_sql(&lite.find, " "),
            "SELECT `org`, `user_id`, `role` FROM `app`.`members`"
        );
    }
}
