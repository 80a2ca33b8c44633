//! The code both derives share: `Table` and `RowCodec` for the owning derive.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::internals::ast::Container;

/// The path generated code uses for the runtime: `::safesync` or the
/// container's `crate = "…"`.
pub(crate) fn krate(cont: &Container<'_>) -> TokenStream {
    match cont.attrs.krate.get() {
        Some(path) => quote!(#path),
        None => quote!(::safesync),
    }
}

/// `impl Table` and `impl<DB> RowCodec<DB>` for the record.
pub(crate) fn expand_table(cont: &Container<'_>) -> TokenStream {
    let krate = krate(cont);
    let p = quote!(#krate::__private);
    let ident = cont.ident;

    let table = cont
        .attrs
        .table
        .get()
        .map(syn::LitStr::value)
        .unwrap_or_default();
    let schema = match cont.attrs.schema.get() {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    };
    let columns: Vec<_> = cont.columns().collect();
    let column_names: Vec<String> = columns.iter().map(|f| f.column()).collect();
    let key_idx: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].is_key())
        .collect();
    let version_idx = columns.iter().position(|f| f.is_version());
    let version_meta = match version_idx {
        Some(i) => quote!(::core::option::Option::Some(#i)),
        None => quote!(::core::option::Option::None),
    };

    let keys: Vec<_> = key_idx.iter().map(|&i| columns[i]).collect();
    let key_types: Vec<_> = keys.iter().map(|f| f.ty).collect();
    let key_idents: Vec<_> = keys.iter().map(|f| f.ident).collect();
    let (key_ty, bind_key, key_debug) = if keys.len() == 1 {
        let ty = key_types[0];
        let id = key_idents[0];
        (
            quote!(#ty),
            quote!(#p::sqlx::Arguments::add(args, key)?;),
            quote!(::std::format!("{:?}", &self.#id)),
        )
    } else {
        let n = (0..keys.len()).map(syn::Index::from);
        (
            quote!((#(#key_types,)*)),
            quote!(#( #p::sqlx::Arguments::add(args, &key.#n)?; )*),
            quote!(::std::format!("{:?}", (#(&self.#key_idents,)*))),
        )
    };

    let (version_fn, bump_fn, bind_version) = match cont.version_field() {
        Some(f) => {
            let id = f.ident;
            let ty = f.ty;
            let to_i64 = quote_spanned!(ty.span()=> <#ty as #p::VersionInt>::to_i64(self.#id));
            (
                quote!(::core::option::Option::Some(#to_i64)),
                quote!(self.#id = <#ty as #p::VersionInt>::next(self.#id);),
                quote!(#p::sqlx::Arguments::add(args, &self.#id)?;),
            )
        }
        None => (quote!(::core::option::Option::None), quote!(), quote!()),
    };

    let bind_all = columns.iter().map(|f| {
        let id = f.ident;
        quote!(#p::sqlx::Arguments::add(args, &self.#id)?;)
    });
    let bind_values = columns
        .iter()
        .filter(|f| !f.is_key() && !f.is_version())
        .map(|f| {
            let id = f.ident;
            quote!(#p::sqlx::Arguments::add(args, &self.#id)?;)
        });
    let bind_own_key = key_idents
        .iter()
        .map(|id| quote!(#p::sqlx::Arguments::add(args, &self.#id)?;));

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
