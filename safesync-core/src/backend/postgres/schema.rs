//! PostgreSQL: the DDL types, which column types hold which fields (sqlx
//! reads a column back only as its exact type), and the catalog read from
//! `pg_attribute` and `pg_index`.

use crate::schema::ColumnType;

/// The DDL type of a column.
pub(super) fn ddl_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::SmallInt => "SMALLINT",
        ColumnType::Int => "INTEGER",
        ColumnType::BigInt => "BIGINT",
        ColumnType::Real => "REAL",
        ColumnType::Double => "DOUBLE PRECISION",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Text => "TEXT",
        ColumnType::Bytes => "BYTEA",
    }
}

/// Whether a column of this type (`format_type`'s spelling) is one sqlx
/// decodes `ty` from.
pub(super) fn holds(ty: ColumnType, sql_type: &str) -> bool {
    let base = sql_type.split('(').next().unwrap_or_default().trim();
    match ty {
        ColumnType::SmallInt => base == "smallint",
        ColumnType::Int => base == "integer",
        ColumnType::BigInt => base == "bigint",
        ColumnType::Real => base == "real",
        ColumnType::Double => base == "double precision",
        ColumnType::Bool => base == "boolean",
        ColumnType::Text => matches!(
            base,
            "text" | "character varying" | "character" | "name" | "citext"
        ),
        ColumnType::Bytes => base == "bytea",
    }
}

/// The live table, found as a query would find it: through `search_path`
/// unless the record names its schema.
pub(super) async fn live_table(
    pool: &sqlx::PgPool,
    meta: &crate::record::TableMeta,
) -> crate::error::Result<Option<crate::schema::LiveTable>> {
    use crate::schema::{LiveColumn, LiveTable};

    let mut name = String::new();
    crate::sql::table::<sqlx::Postgres>(&mut name, meta);
    let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::int8")
        .bind(&name)
        .fetch_one(pool)
        .await?;
    let Some(oid) = oid else {
        return Ok(None);
    };
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull \
         FROM pg_attribute WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped \
         ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(pool)
    .await?;
    let mut live = LiveTable {
        columns: rows
            .into_iter()
            .map(|(name, sql_type, not_null)| LiveColumn {
                name,
                sql_type,
                nullable: !not_null,
            })
            .collect(),
        unique: Vec::new(),
    };
    // Full unique indexes (primary keys and unique constraints have one):
    // no predicate, no expressions.
    let unique: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT i.indexrelid::int8::text, a.attname::text \
         FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1::int8::oid AND i.indisunique AND i.indpred IS NULL \
         AND i.indexprs IS NULL \
         ORDER BY i.indexrelid, k.n",
    )
    .bind(oid)
    .fetch_all(pool)
    .await?;
    live.add_unique_rows(unique);
    Ok(Some(live))
}
