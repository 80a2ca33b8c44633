//! MySQL / MariaDB: the DDL types, which column types hold which fields,
//! and the catalog read from `information_schema`.

use crate::schema::ColumnType;

/// After the column list: text in full Unicode, whatever the server's
/// default. (Not a binary collation: sqlx reads its text columns as bytes.)
pub(super) const TABLE_OPTIONS: &str = " CHARACTER SET utf8mb4";

/// The DDL type of a column. Text and bytes in a key get a bounded type,
/// which an index needs.
pub(super) fn ddl_type(ty: ColumnType, in_key: bool) -> &'static str {
    match ty {
        ColumnType::SmallInt => "SMALLINT",
        ColumnType::Int => "INT",
        ColumnType::BigInt => "BIGINT",
        ColumnType::Real => "FLOAT",
        ColumnType::Double => "DOUBLE",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Text if in_key => "VARCHAR(255)",
        ColumnType::Text => "LONGTEXT",
        ColumnType::Bytes if in_key => "VARBINARY(255)",
        ColumnType::Bytes => "LONGBLOB",
    }
}

/// Signed integer types by width in bytes.
const INTEGERS: [(&str, u8); 5] = [
    ("tinyint", 1),
    ("smallint", 2),
    ("mediumint", 3),
    ("int", 4),
    ("bigint", 8),
];

/// Whether a column of this type (`COLUMN_TYPE`, e.g. `bigint(20)`,
/// `int(10) unsigned`, `varchar(64)`) holds every value of `ty`.
pub(super) fn holds(ty: ColumnType, column_type: &str) -> bool {
    let t = column_type.to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    let unsigned = t.contains("unsigned");
    let int_width = INTEGERS.iter().find(|(n, _)| *n == base).map(|&(_, w)| w);
    let signed_int_of = |bytes: u8| !unsigned && int_width.is_some_and(|w| w >= bytes);
    match ty {
        ColumnType::SmallInt => signed_int_of(2),
        ColumnType::Int => signed_int_of(4),
        ColumnType::BigInt => signed_int_of(8),
        ColumnType::Bool => int_width.is_some() || t == "bit(1)",
        ColumnType::Real => matches!(base, "float" | "double"),
        ColumnType::Double => base == "double",
        ColumnType::Text => matches!(
            base,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
        ),
        ColumnType::Bytes => matches!(
            base,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
        ),
    }
}

/// The live table from `information_schema` (`COLUMNS`, and `STATISTICS`
/// for unique indexes, the primary key included).
pub(super) async fn live_table(
    pool: &sqlx::MySqlPool,
    meta: &crate::record::TableMeta,
) -> crate::error::Result<Option<crate::schema::LiveTable>> {
    use crate::schema::{LiveColumn, LiveTable};

    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR), CAST(IS_NULLABLE AS CHAR) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(meta.schema)
    .bind(meta.table)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut live = LiveTable {
        columns: rows
            .into_iter()
            .map(|(name, sql_type, nullable)| LiveColumn {
                name,
                sql_type,
                nullable: nullable.eq_ignore_ascii_case("YES"),
            })
            .collect(),
        unique: Vec::new(),
    };
    // A prefix index (`SUB_PART`) is unique on the prefixes only: its
    // column counts as no whole column, which leaves the index out.
    let unique: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT CAST(INDEX_NAME AS CHAR), \
         CASE WHEN SUB_PART IS NULL THEN CAST(COLUMN_NAME AS CHAR) END \
         FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
         ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(meta.schema)
    .bind(meta.table)
    .fetch_all(pool)
    .await?;
    live.add_unique_rows(unique);
    Ok(Some(live))
}
