//! What a statement's bound values and a scalar query's result may be:
//! types that encode (or decode) on every enabled backend, as the derives'
//! `Codecs` bound asks of a record's fields.

use sqlx::error::BoxDynError;
use sqlx::{Arguments as _, Database, Decode, Encode, Type};

/// Per-backend halves of [`Value`] and [`Scalar`]: on a backend whose
/// feature is off they ask nothing.
macro_rules! backend_bounds {
    ($feature:literal, $db:ty, $value:ident, $scalar:ident, $params:ident) => {
        #[cfg(feature = $feature)]
        #[doc(hidden)]
        pub trait $value<'q>: Encode<'q, $db> + Type<$db> + 'q {}
        #[cfg(feature = $feature)]
        impl<'q, T: Encode<'q, $db> + Type<$db> + 'q> $value<'q> for T {}
        #[cfg(not(feature = $feature))]
        #[doc(hidden)]
        pub trait $value<'q> {}
        #[cfg(not(feature = $feature))]
        impl<T> $value<'_> for T {}

        #[cfg(feature = $feature)]
        #[doc(hidden)]
        pub trait $scalar: for<'r> Decode<'r, $db> + Type<$db> {}
        #[cfg(feature = $feature)]
        impl<T: for<'r> Decode<'r, $db> + Type<$db>> $scalar for T {}
        #[cfg(not(feature = $feature))]
        #[doc(hidden)]
        pub trait $scalar {}
        #[cfg(not(feature = $feature))]
        impl<T> $scalar for T {}

        #[cfg(feature = $feature)]
        #[doc(hidden)]
        pub trait $params<'q>: Bind<'q, $db> {}
        #[cfg(feature = $feature)]
        impl<'q, T: Bind<'q, $db>> $params<'q> for T {}
        #[cfg(not(feature = $feature))]
        #[doc(hidden)]
        pub trait $params<'q> {}
        #[cfg(not(feature = $feature))]
        impl<T> $params<'_> for T {}
    };
}
backend_bounds!(
    "sqlite",
    sqlx::Sqlite,
    SqliteValue,
    SqliteScalar,
    SqliteParams
);
backend_bounds!("mysql", sqlx::MySql, MySqlValue, MySqlScalar, MySqlParams);
backend_bounds!("postgres", sqlx::Postgres, PgValue, PgScalar, PgParams);

/// A value that can be bound to a `?` placeholder on every enabled backend:
/// integers, floats, `bool`, `String`/`&str`, `Vec<u8>`/`&[u8]`, `Option`
/// of those (`None` is `NULL`), references to them, and your own
/// `sqlx::Type`s that encode on each backend.
///
/// ```
/// fn bindable<'q, V: safesync_core::Value<'q>>(_: V) {}
/// bindable(7_i64);
/// bindable("text");
/// bindable(Some(String::from("owned")));
/// bindable(None::<i32>);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be bound as a value on every enabled backend",
    label = "not encodable on every enabled backend",
    note = "bind integers, floats, bool, String/&str, Vec<u8>/&[u8] or an Option of one of them; a type of your own needs `sqlx::Encode` and `sqlx::Type` for each enabled backend"
)]
pub trait Value<'q>: SqliteValue<'q> + MySqlValue<'q> + PgValue<'q> + Send {}
impl<'q, T: SqliteValue<'q> + MySqlValue<'q> + PgValue<'q> + Send> Value<'q> for T {}

/// A single column's value that decodes on every enabled backend: what
/// [`Tx::fetch_one`](crate::Tx::fetch_one) and its siblings return (the
/// first column of each row).
///
/// ```
/// fn decodable<S: safesync_core::Scalar>() {}
/// decodable::<i64>();
/// decodable::<Option<String>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be decoded from a column on every enabled backend",
    label = "not decodable on every enabled backend",
    note = "fetch an owned scalar (i64, f64, bool, String, Vec<u8>, or an Option of one); for whole rows derive a record and use `select_all`"
)]
pub trait Scalar: SqliteScalar + MySqlScalar + PgScalar + Send + Unpin + 'static {}
impl<T: SqliteScalar + MySqlScalar + PgScalar + Send + Unpin + 'static> Scalar for T {}

/// Binds a statement's values, in order, on one backend.
#[doc(hidden)]
pub trait Bind<'q, DB: Database> {
    /// Adds every value to `args`, first to last.
    fn bind(self, args: &mut <DB as Database>::Arguments<'q>) -> Result<(), BoxDynError>;
}

/// The values bound to a statement's `?` placeholders, first to last: a
/// tuple of [`Value`]s — `()` for none, `(x,)` for one, `(a, b, c)` and so
/// on up to 16.
///
/// ```
/// fn params<'q, P: safesync_core::Params<'q>>(p: P) -> usize { p.count() }
/// assert_eq!(params(()), 0);
/// assert_eq!(params((7_i64,)), 1);
/// assert_eq!(params(("ada", 10_i64, None::<String>)), 3);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a list of bound values",
    label = "expected a tuple of values such as `(id,)` or `(name, amount)`",
    note = "one value is written `(value,)`, none is `()`; every element must bind on every enabled backend"
)]
pub trait Params<'q>: SqliteParams<'q> + MySqlParams<'q> + PgParams<'q> + Send {
    /// How many values there are.
    fn count(&self) -> usize;
}

macro_rules! tuple_params {
    ($($n:literal: $($v:ident)*;)*) => {$(
        impl<'q, DB: Database, $($v: Encode<'q, DB> + Type<DB> + 'q,)*> Bind<'q, DB> for ($($v,)*) {
            #[allow(non_snake_case, unused_variables)]
            fn bind(self, args: &mut <DB as Database>::Arguments<'q>) -> Result<(), BoxDynError> {
                let ($($v,)*) = self;
                $(args.add($v)?;)*
                Ok(())
            }
        }
        impl<'q, $($v: Value<'q>,)*> Params<'q> for ($($v,)*) {
            fn count(&self) -> usize {
                $n
            }
        }
    )*};
}
tuple_params! {
    0: ;
    1: A;
    2: A B;
    3: A B C;
    4: A B C D;
    5: A B C D E;
    6: A B C D E F;
    7: A B C D E F G;
    8: A B C D E F G H;
    9: A B C D E F G H I;
    10: A B C D E F G H I J;
    11: A B C D E F G H I J K;
    12: A B C D E F G H I J K L;
    13: A B C D E F G H I J K L M;
    14: A B C D E F G H I J K L M N;
    15: A B C D E F G H I J K L M N O;
    16: A B C D E F G H I J K L M N O P;
}
