//! `#[derive(Versioned)]`: owns the record impls (it always has a version).

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::internals::ast::Container;
use crate::internals::check::{Derive, check};
use crate::internals::ctxt::Ctxt;
use crate::record::{expand_table, krate};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut cx = Ctxt::default();
    let cont = Container::from_ast(&mut cx, input, "Versioned");
    if let Some(cont) = &cont {
        check(&mut cx, cont, Derive::Versioned);
    }
    cx.check()?;
    let Some(cont) = cont else {
        return Ok(TokenStream::new());
    };

    let ident = cont.ident;
    let p = krate(&cont);
    let table = expand_table(&cont);
    Ok(quote! {
        const _: () = {
            #table

            #[automatically_derived]
            // `for<'__a>` defers the `Record` bound to the uses of the
            // record: a field type a backend cannot store is then the one
            // error at that field, not also an unmet bound here.
            impl #p::__private::Versioned for #ident where for<'__a> #ident: #p::__private::Record {}

            #[automatically_derived]
            impl #p::__private::VersionedDerived for #ident {}

            #[automatically_derived]
            impl #p::__private::VersionChecked for #ident {}
        };
    })
}
