use super::{
    ColumnDef, ColumnType, LiveColumn, LiveTable, Mismatch, SchemaMeta, compare, create_table_sql,
};
use crate::backend::Backend;
use crate::record::TableMeta;

const META: TableMeta = TableMeta {
    table: "memberships",
    schema: Some("app"),
    columns: &["org", "user_id", "note", "version"],
    key: &[0, 1],
    version: Some(3),
};

const SCHEMA: SchemaMeta = SchemaMeta {
    record: "Membership",
    columns: &[
        ColumnDef {
            field: "org",
            rust_type: "String",
            ty: ColumnType::Text,
            nullable: false,
        },
        ColumnDef {
            field: "user_id",
            rust_type: "i64",
            ty: ColumnType::BigInt,
            nullable: false,
        },
        ColumnDef {
            field: "note",
            rust_type: "Option<String>",
            ty: ColumnType::Text,
            nullable: true,
        },
        ColumnDef {
            field: "version",
            rust_type: "i32",
            ty: ColumnType::Int,
            nullable: false,
        },
    ],
};

#[test]
fn create_table_uses_each_backends_types_and_a_composite_primary_key() {
    assert_eq!(
        create_table_sql::<sqlx::Postgres>(&META, &SCHEMA),
        "CREATE TABLE IF NOT EXISTS \"app\".\"memberships\" (\"org\" TEXT NOT NULL, \
         \"user_id\" BIGINT NOT NULL, \"note\" TEXT NULL, \"version\" INTEGER NOT NULL, \
         PRIMARY KEY (\"org\", \"user_id\"))"
    );
    assert_eq!(
        create_table_sql::<sqlx::MySql>(&META, &SCHEMA),
        "CREATE TABLE IF NOT EXISTS `app`.`memberships` (`org` VARCHAR(255) NOT NULL, \
         `user_id` BIGINT NOT NULL, `note` LONGTEXT NULL, `version` INT NOT NULL, \
         PRIMARY KEY (`org`, `user_id`)) CHARACTER SET utf8mb4"
    );
    assert_eq!(
        create_table_sql::<sqlx::Sqlite>(&META, &SCHEMA),
        "CREATE TABLE IF NOT EXISTS `app`.`memberships` (`org` TEXT NOT NULL, \
         `user_id` INTEGER NOT NULL, `note` TEXT NULL, `version` INTEGER NOT NULL, \
         PRIMARY KEY (`org`, `user_id`))"
    );
}

fn column(name: &str, sql_type: &str, nullable: bool) -> LiveColumn {
    LiveColumn {
        name: name.into(),
        sql_type: sql_type.into(),
        nullable,
    }
}

#[test]
fn every_mismatch_is_listed_at_once() {
    let live = LiveTable {
        columns: vec![
            column("ORG", "varchar(64)", true),
            column("user_id", "text", false),
            column("extra", "int", true),
        ],
        unique: vec![vec!["org".into()]],
    };
    let found = compare::<sqlx::MySql>(&META, &SCHEMA, Some(&live));
    assert_eq!(
        found,
        vec![
            Mismatch::Nullable {
                column: "org",
                field: "org: String".into()
            },
            Mismatch::WrongType {
                column: "user_id",
                field: "user_id: i64".into(),
                found: "text".into(),
                expected: "BIGINT"
            },
            Mismatch::MissingColumn {
                column: "note",
                field: "note: Option<String>".into(),
                expected: "LONGTEXT"
            },
            Mismatch::MissingColumn {
                column: "version",
                field: "version: i32".into(),
                expected: "INT"
            },
            Mismatch::KeyNotUnique {
                columns: vec!["org", "user_id"]
            },
        ]
    );
    assert_eq!(
        compare::<sqlx::MySql>(&META, &SCHEMA, None),
        vec![Mismatch::MissingTable]
    );
}

#[test]
fn a_matching_table_has_no_mismatch_and_postgres_names_are_exact() {
    let live = LiveTable {
        columns: vec![
            column("org", "text", false),
            column("user_id", "bigint", false),
            column("note", "character varying(10)", true),
            column("version", "integer", false),
        ],
        unique: vec![vec!["user_id".into(), "org".into()]],
    };
    assert!(compare::<sqlx::Postgres>(&META, &SCHEMA, Some(&live)).is_empty());
    let upper = LiveTable {
        columns: vec![column("ORG", "text", false)],
        unique: vec![],
    };
    let found = compare::<sqlx::Postgres>(&META, &SCHEMA, Some(&upper));
    assert!(matches!(
        found[0],
        Mismatch::MissingColumn { column: "org", .. }
    ));
}

#[test]
fn a_type_holds_a_field_only_when_sqlx_reads_every_value_back() {
    assert!(<sqlx::Sqlite as Backend>::holds(
        ColumnType::BigInt,
        "BIGINT"
    ));
    assert!(<sqlx::Sqlite as Backend>::holds(
        ColumnType::Bool,
        "BOOLEAN"
    ));
    assert!(!<sqlx::Sqlite as Backend>::holds(
        ColumnType::BigInt,
        "TEXT"
    ));
    assert!(!<sqlx::Sqlite as Backend>::holds(
        ColumnType::Text,
        "INTEGER"
    ));
    assert!(<sqlx::Sqlite as Backend>::holds(
        ColumnType::Text,
        "VARCHAR(64)"
    ));
    assert!(<sqlx::Sqlite as Backend>::holds(ColumnType::Bytes, "BLOB"));
    assert!(!<sqlx::Sqlite as Backend>::holds(
        ColumnType::Double,
        "NUMERIC"
    ));

    assert!(<sqlx::MySql as Backend>::holds(
        ColumnType::Int,
        "bigint(20)"
    ));
    assert!(!<sqlx::MySql as Backend>::holds(
        ColumnType::BigInt,
        "int(11)"
    ));
    assert!(!<sqlx::MySql as Backend>::holds(
        ColumnType::BigInt,
        "bigint(20) unsigned"
    ));
    assert!(<sqlx::MySql as Backend>::holds(
        ColumnType::Bool,
        "tinyint(1)"
    ));
    assert!(!<sqlx::MySql as Backend>::holds(
        ColumnType::Double,
        "float"
    ));
    assert!(!<sqlx::MySql as Backend>::holds(
        ColumnType::BigInt,
        "varchar(20)"
    ));
    assert!(<sqlx::MySql as Backend>::holds(
        ColumnType::Bytes,
        "varbinary(255)"
    ));

    assert!(<sqlx::Postgres as Backend>::holds(
        ColumnType::BigInt,
        "bigint"
    ));
    assert!(!<sqlx::Postgres as Backend>::holds(
        ColumnType::Int,
        "bigint"
    ));
    assert!(<sqlx::Postgres as Backend>::holds(
        ColumnType::Text,
        "character varying(64)"
    ));
    assert!(!<sqlx::Postgres as Backend>::holds(
        ColumnType::BigInt,
        "text"
    ));
}

#[test]
fn unique_rows_are_grouped_by_index_and_partial_indexes_left_out() {
    let mut live = LiveTable::default();
    live.add_unique_rows(vec![
        ("a".into(), Some("x".into())),
        ("a".into(), Some("y".into())),
        ("b".into(), Some("z".into())),
        ("b".into(), None),
        ("c".into(), Some("w".into())),
    ]);
    assert_eq!(
        live.unique,
        vec![vec!["x".to_owned(), "y".to_owned()], vec!["w".to_owned()]]
    );
}
