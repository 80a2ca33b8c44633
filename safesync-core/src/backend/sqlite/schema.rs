//! SQLite: the DDL types, which declared types hold which fields (by
//! SQLite's type affinity), and the catalog read through `pragma_table_info`.

use crate::schema::ColumnType;

/// The DDL type of a column.
pub(super) fn ddl_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => "INTEGER",
        ColumnType::Real | ColumnType::Double => "REAL",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Text => "TEXT",
        ColumnType::Bytes => "BLOB",
    }
}

/// A declared type's affinity (<https://sqlite.org/datatype3.html>, 3.1).
#[derive(Debug, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

fn affinity(declared: &str) -> Affinity {
    let d = declared.to_ascii_uppercase();
    if d.contains("INT") {
        Affinity::Integer
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Affinity::Text
    } else if d.contains("BLOB") || d.is_empty() {
        Affinity::Blob
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

/// Whether a column of this declared type keeps `ty`'s values as sqlx
/// reads them back: a TEXT column turns an integer into text, a NUMERIC
/// one a float like 1.0 into the integer 1.
pub(super) fn holds(ty: ColumnType, declared: &str) -> bool {
    let a = affinity(declared);
    match ty {
        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt | ColumnType::Bool => {
            matches!(a, Affinity::Integer | Affinity::Numeric)
        }
        ColumnType::Real | ColumnType::Double => a == Affinity::Real,
        ColumnType::Text => a == Affinity::Text,
        ColumnType::Bytes => a == Affinity::Blob,
    }
}

/// The live table from `pragma_table_info` and `pragma_index_list`.
///
/// A column is nullable unless declared `NOT NULL`, or it is the rowid
/// (`INTEGER PRIMARY KEY`): SQLite lets other primary-key columns hold NULL.
pub(super) async fn live_table(
    pool: &sqlx::SqlitePool,
    meta: &crate::record::TableMeta,
) -> crate::error::Result<Option<crate::schema::LiveTable>> {
    use crate::schema::{LiveColumn, LiveTable};

    let schema = meta.schema.unwrap_or("main");
    let rows: Vec<(String, String, bool, i64)> = sqlx::query_as(
        "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1, ?2) ORDER BY cid",
    )
    .bind(meta.table)
    .bind(schema)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let pk: Vec<&(String, String, bool, i64)> = rows.iter().filter(|r| r.3 > 0).collect();
    let rowid = match pk.as_slice() {
        [only] if only.1.eq_ignore_ascii_case("INTEGER") => Some(only.0.clone()),
        _ => None,
    };
    let mut live = LiveTable::default();
    let mut primary: Vec<(i64, String)> = pk.iter().map(|r| (r.3, r.0.clone())).collect();
    primary.sort();
    if !primary.is_empty() {
        live.unique
            .push(primary.into_iter().map(|(_, c)| c).collect());
    }
    for (name, sql_type, not_null, _) in rows {
        let nullable = !not_null && rowid.as_deref() != Some(name.as_str());
        live.columns.push(LiveColumn {
            name,
            sql_type,
            nullable,
        });
    }
    // An expression column has no name (NULL): such an index is skipped.
    let unique: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT il.name, ii.name FROM pragma_index_list(?1, ?2) AS il, \
         pragma_index_info(il.name, ?2) AS ii \
         WHERE il.\"unique\" = 1 AND il.partial = 0 \
         ORDER BY il.name, ii.seqno",
    )
    .bind(meta.table)
    .bind(schema)
    .fetch_all(pool)
    .await?;
    live.add_unique_rows(unique);
    Ok(Some(live))
}
