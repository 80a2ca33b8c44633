//! Per-field bounds of the derives: what a field's type must be for each
//! enabled backend to store it.
//!
//! The derives ask every stored field's type for [`Column`], at the field
//! itself, so a type that a backend cannot encode or decode is one error
//! there naming the backend, rather than a cascade of unmet bounds on the
//! record's generated impls.

/// Declares the per-backend bound: sqlx's `Type`, `Encode` and `Decode` for
/// `$db` when `$feature` is on, nothing otherwise.
macro_rules! backend_column {
    ($feature:literal, $name:ident, $db:ty, $message:literal, $label:literal) => {
        /// A field type this backend can store: sqlx's `Type`, `Encode` and
        /// `Decode` for it.
        #[cfg(feature = $feature)]
        #[diagnostic::on_unimplemented(
            message = $message,
            label = $label,
            note = "safesync stores a field through sqlx's `Type`, `Encode` and `Decode`; those of i16, i32, i64, f32, f64, bool, String, Vec<u8> and `Option`s of them exist on every backend",
            note = "for a type of your own, implement sqlx's `Type`, `Encode` and `Decode` for it on each enabled backend, or store a supported type and convert"
        )]
        pub trait $name {}
        // `do_not_recommend`: a missing `Encode`, `Decode` or `Type` is then
        // reported as this one trait, once, with its message.
        #[cfg(feature = $feature)]
        #[diagnostic::do_not_recommend]
        impl<T> $name for T where
            T: for<'q> sqlx::Encode<'q, $db> + for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db>
        {
        }
        /// Always true: this backend is not enabled.
        #[cfg(not(feature = $feature))]
        pub trait $name {}
        #[cfg(not(feature = $feature))]
        impl<T: ?Sized> $name for T {}
    };
}

backend_column!(
    "sqlite",
    SqliteColumn,
    sqlx::Sqlite,
    "field type `{Self}` cannot be stored on SQLite: sqlx has no `Type`, `Encode` and `Decode` for it on `Sqlite`",
    "not storable on SQLite"
);
backend_column!(
    "mysql",
    MySqlColumn,
    sqlx::MySql,
    "field type `{Self}` cannot be stored on MySQL/MariaDB: sqlx has no `Type`, `Encode` and `Decode` for it on `MySql`",
    "not storable on MySQL/MariaDB"
);
backend_column!(
    "postgres",
    PgColumn,
    sqlx::Postgres,
    "field type `{Self}` cannot be stored on PostgreSQL: sqlx has no `Type`, `Encode` and `Decode` for it on `Postgres`",
    "not storable on PostgreSQL"
);
