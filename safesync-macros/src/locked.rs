//! `#[derive(Locked)]`: row locks. Owns the record impls only when the
//! struct has no version field; otherwise `Versioned` owns them and must be
//! derived too.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::DeriveInput;

use crate::internals::ast::Container;
use crate::internals::check::{Derive, check};
use crate::internals::ctxt::Ctxt;
use crate::record::{expand_table, krate};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut cx = Ctxt::default();
    let cont = Container::from_ast(&mut cx, input, "Locked");
    if let Some(cont) = &cont {
        check(&mut cx, cont, Derive::Locked);
    }
    cx.check()?;
    let Some(cont) = cont else {
        return Ok(TokenStream::new());
    };

    let ident = cont.ident;
    let p = krate(&cont);
    let owned = match cont.version_field() {
        None => expand_table(&cont),
        Some(field) => {
            // The version field makes `Versioned` the owner; ask for it at the
            // version field, where the reason is.
            let span = field.attrs.version.span().unwrap_or_else(|| ident.span());
            quote_spanned! {span=>
                const _: fn() = || {
                    fn derive_versioned_too<T: #p::__private::VersionedDerived>() {}
                    derive_versioned_too::<#ident>();
                };
            }
        }
    };
    Ok(quote! {
        const _: () = {
            #owned

            #[automatically_derived]
            impl #p::__private::Locked for #ident {}
        };
    })
}
