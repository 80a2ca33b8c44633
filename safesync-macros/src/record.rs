//! The code both derives share: `Table` and `RowCodec` for the owning derive.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::internals::ast::{Container, Field};

/// The path generated code uses for the runtime: `::safesync` or the
/// container's `crate = "…"`.
pub(crate) fn krate(cont: &Container<'_>) -> TokenStream {
    cont.attrs.krate.krate()
}

/// `impl Table` and `impl<DB> RowCodec<DB>` for the record.
pub(crate) fn expand_table(cont: &Container<'_>) -> TokenStream {
    let krate = krate(cont);
    let p = quote!(#krate::__private);
    let table = impl_table(cont, &p);
    let row_codec = impl_row_codec(cont, &p);
    let column_checks = column_checks(cont, &p);
    let schema = impl_table_schema(cont, &p);
    quote! {
        #table
        #row_codec
        #column_checks
        #schema
    }
}

/// One check per stored field, spanned at its type: a type some enabled
/// backend cannot encode or decode is one error there, naming the backend.
/// (The record's own impls defer these bounds, so they add no errors of
/// their own.)
fn column_checks(cont: &Container<'_>, p: &TokenStream) -> TokenStream {
    let checks = cont.columns().map(|f| {
        let ty = f.ty;
        quote_spanned! {ty.span()=>
            stored_column::<#ty>();
        }
    });
    quote! {
        const _: fn() = || {
            fn stored_column<T: #p::SqliteColumn + #p::MySqlColumn + #p::PgColumn>() {}
            #(#checks)*
        };
    }
}

/// `impl TableSchema`: each stored field's `SqlType`, for `create_table`
/// and `check_table`. Its bounds are deferred (`for<'__a>`), so a field type
/// without an `SqlType` only makes those two calls unavailable, with
/// `TableSchema`'s message where they are called.
fn impl_table_schema(cont: &Container<'_>, p: &TokenStream) -> TokenStream {
    let ident = cont.ident;
    let record = ident.to_string();
    let columns: Vec<_> = cont.columns().collect();
    let bounds = columns.iter().map(|f| {
        let ty = f.ty;
        quote!(for<'__a> #ty: #p::SqlType,)
    });
    let defs = columns.iter().map(|f| {
        let ty = f.ty;
        let field = f.ident.to_string().trim_start_matches("r#").to_owned();
        let rust_type = type_string(ty);
        quote! {
            #p::ColumnDef {
                field: #field,
                rust_type: #rust_type,
                ty: <#ty as #p::SqlType>::COLUMN,
                nullable: <#ty as #p::SqlType>::NULLABLE,
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #p::TableSchema for #ident where #(#bounds)* {
            const SCHEMA: &'static #p::SchemaMeta = &#p::SchemaMeta {
                record: #record,
                columns: &[#(#defs),*],
            };
        }
    }
}

/// A type as the user wrote it: `Option<String>`, not `Option < String >`.
fn type_string(ty: &syn::Type) -> String {
    let raw = quote!(#ty).to_string();
    let mut out = String::with_capacity(raw.len());
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
    for token in raw.split(' ') {
        let after_word = out.chars().last().is_some_and(is_word);
        let before_word = token.chars().next().is_some_and(is_word);
        if (after_word && before_word) || out.ends_with(',') {
            out.push(' ');
        }
        out.push_str(token);
    }
    out
}

/// `Some(#value)` or `None`, as an expression.
fn option<T: quote::ToTokens>(value: Option<T>) -> TokenStream {
    value.map_or_else(
        || quote!(::core::option::Option::None),
        |v| quote!(::core::option::Option::Some(#v)),
    )
}

/// The key fields, in field order.
fn key_fields<'c, 'a>(cont: &'c Container<'a>) -> Vec<&'c Field<'a>> {
    cont.columns().filter(|f| f.is_key()).collect()
}

fn impl_table(cont: &Container<'_>, p: &TokenStream) -> TokenStream {
    let ident = cont.ident;
    let table = cont
        .attrs
        .table
        .get()
        .map(syn::LitStr::value)
        .unwrap_or_default();
    let schema = option(cont.attrs.schema.get());
    let columns: Vec<_> = cont.columns().collect();
    let column_names: Vec<String> = columns.iter().map(|f| f.column()).collect();
    let key_idx: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].is_key())
        .collect();
    let version_meta = option(columns.iter().position(|f| f.is_version()));

    let keys = key_fields(cont);
    let key_types: Vec<_> = keys.iter().map(|f| f.ty).collect();
    let key_idents: Vec<_> = keys.iter().map(|f| f.ident).collect();
    let (key_ty, key_debug) = if let [key] = keys.as_slice() {
        let ty = key.ty;
        let id = key.ident;
        (quote!(#ty), quote!(::std::format!("{:?}", &self.#id)))
    } else {
        (
            quote!((#(#key_types,)*)),
            quote!(::std::format!("{:?}", (#(&self.#key_idents,)*))),
        )
    };

    let (version_fn, bump_fn) = match cont.version_field() {
        Some(f) => {
            let id = f.ident;
            let ty = f.ty;
            let to_i64 = quote_spanned!(ty.span()=> <#ty as #p::VersionInt>::to_i64(self.#id));
            (
                quote!(::core::option::Option::Some(#to_i64)),
                quote!(self.#id = <#ty as #p::VersionInt>::next(self.#id);),
            )
        }
        None => (quote!(::core::option::Option::None), quote!()),
    };

    quote! {
        #[automatically_derived]
        impl #p::Table for #ident {
            type Key = #key_ty;
            const META: &'static #p::TableMeta = &#p::TableMeta {
                table: #table,
                schema: #schema,
                columns: &[#(#column_names),*],
                key: &[#(#key_idx),*],
                version: #version_meta,
            };
            fn statements() -> &'static #p::Statements {
                static STATEMENTS: #p::Statements = #p::Statements::new();
                &STATEMENTS
            }
            fn version(&self) -> ::core::option::Option<i64> {
                #version_fn
            }
            fn bump_version(&mut self) {
                #bump_fn
            }
            fn key_debug(&self) -> ::std::string::String {
                #key_debug
            }
        }
    }
}

fn impl_row_codec(cont: &Container<'_>, p: &TokenStream) -> TokenStream {
    let ident = cont.ident;
    let columns: Vec<_> = cont.columns().collect();
    let keys = key_fields(cont);

    let bind = |f: &Field<'_>| {
        let id = f.ident;
        quote!(#p::sqlx::Arguments::add(args, &self.#id)?;)
    };
    let bind_all = columns.iter().map(|f| bind(f));
    let bind_values = columns
        .iter()
        .filter(|f| !f.is_key() && !f.is_version())
        .map(|f| bind(f));
    let bind_own_key = keys.iter().map(|f| bind(f));
    let bind_version = cont.version_field().map(bind);
    let bind_key = if keys.len() == 1 {
        quote!(#p::sqlx::Arguments::add(args, key)?;)
    } else {
        let n = (0..keys.len()).map(syn::Index::from);
        quote!(#( #p::sqlx::Arguments::add(args, &key.#n)?; )*)
    };

    let bounds = columns.iter().map(|f| {
        let ty = f.ty;
        quote_spanned! {ty.span()=>
            #ty: for<'q> #p::sqlx::Encode<'q, DB> + for<'r> #p::sqlx::Decode<'r, DB> + #p::sqlx::Type<DB>,
        }
    });

    let mut index = 0usize;
    let decode_fields = cont.fields.iter().map(|f| {
        let id = f.ident;
        if f.is_skipped() {
            let ty = f.ty;
            quote_spanned!(ty.span()=> #id: <#ty as ::core::default::Default>::default())
        } else {
            let i = index;
            index += 1;
            quote! {
                #id: #p::sqlx::Row::try_get(row, #i)
                    .map_err(|e| #p::column_error(e, <Self as #p::Table>::META, #i))?
            }
        }
    });

    quote! {
        #[automatically_derived]
        impl<DB> #p::RowCodec<DB> for #ident
        where
            DB: #p::sqlx::Database,
            usize: #p::sqlx::ColumnIndex<<DB as #p::sqlx::Database>::Row>,
            #(#bounds)*
        {
            fn bind_all<'q>(
                &'q self,
                args: &mut <DB as #p::sqlx::Database>::Arguments<'q>,
            ) -> ::core::result::Result<(), #p::sqlx::error::BoxDynError> {
                #(#bind_all)*
                ::core::result::Result::Ok(())
            }
            fn bind_values<'q>(
                &'q self,
                args: &mut <DB as #p::sqlx::Database>::Arguments<'q>,
            ) -> ::core::result::Result<(), #p::sqlx::error::BoxDynError> {
                #(#bind_values)*
                ::core::result::Result::Ok(())
            }
            fn bind_own_key<'q>(
                &'q self,
                args: &mut <DB as #p::sqlx::Database>::Arguments<'q>,
            ) -> ::core::result::Result<(), #p::sqlx::error::BoxDynError> {
                #(#bind_own_key)*
                ::core::result::Result::Ok(())
            }
            fn bind_version<'q>(
                &'q self,
                args: &mut <DB as #p::sqlx::Database>::Arguments<'q>,
            ) -> ::core::result::Result<(), #p::sqlx::error::BoxDynError> {
                #bind_version
                ::core::result::Result::Ok(())
            }
            fn bind_key<'q>(
                key: &'q <Self as #p::Table>::Key,
                args: &mut <DB as #p::sqlx::Database>::Arguments<'q>,
            ) -> ::core::result::Result<(), #p::sqlx::error::BoxDynError> {
                #bind_key
                ::core::result::Result::Ok(())
            }
            fn decode(
                row: &<DB as #p::sqlx::Database>::Row,
            ) -> ::core::result::Result<Self, #p::sqlx::Error> {
                ::core::result::Result::Ok(Self { #(#decode_fields),* })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::type_string;

    #[test]
    fn types_are_written_as_in_source() {
        for written in [
            "i64",
            "Option<String>",
            "Vec<u8>",
            "std::string::String",
            "Option<Vec<u8>>",
            "&'static str",
            "(i64, String)",
        ] {
            let ty: syn::Type = syn::parse_str(written).unwrap();
            assert_eq!(type_string(&ty), written);
        }
    }
}
