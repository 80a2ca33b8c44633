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
    let (owned, locked_bound) = match cont.version_field() {
        // `for<'__a>` defers the `Record` bound to the uses of the record,
        // as in `Versioned`: a bad field type is one error at the field.
        None => {
            let table = expand_table(&cont);
            (
                quote! {
                    #table

                    #[automatically_derived]
                    impl #p::__private::Unversioned for #ident {}
                },
                quote!(where for<'__a> #ident: #p::__private::Record),
            )
        }
        Some(field) => {
            // The version field makes `Versioned` the owner; ask for it at the
            // version field, where the reason is. The struct's name is
            // re-spanned there too, or the error would point at the name.
            let span = field.attrs.version.span().unwrap_or_else(|| ident.span());
            let mut ident_at_version = ident.clone();
            ident_at_version.set_span(span);
            let check = quote_spanned! {span=>
                const _: fn() = || {
                    fn derive_versioned_too<T: #p::__private::VersionedDerived>() {}
                    derive_versioned_too::<#ident_at_version>();
                };
            };
            // `Locked: Record` holds only through `Versioned`'s impls. The
            // `for<'__a>` keeps this bound from being checked where it is
            // written, so a missing `Versioned` is the one error above, not
            // also an unmet `Record` bound on this impl.
            let bound = quote!(where for<'__a> #ident: #p::__private::Versioned);
            (check, bound)
        }
    };
    Ok(quote! {
        const _: () = {
            #owned

            #[automatically_derived]
            impl #p::__private::Locked for #ident #locked_bound {}
        };
    })
}
