//! `#[queue_handler(stream = "…", group = "…")]` on
//! `async fn name(tx: &mut Tx<'_>, msg: Payload) -> Result<(), Error>`, or
//! on `async fn name(msg: Payload) -> Result<(), Error>` (no transaction).
//!
//! Expands to a unit struct with the fn's name — the handler value for
//! `Worker::handle(name)` — whose `name::stream()` is the typed stream and
//! `name::call(…)` the original fn, plus its `Handler` impl (with `tx`) or
//! `PlainHandler` impl (without).

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser as _;
use syn::spanned::Spanned as _;
use syn::{FnArg, ItemFn, LitStr, Pat, Type};

use crate::transactional::is_tx;

const OPTIONS: &str = "`stream = \"…\"`, `group = \"…\"`";

struct Options {
    stream: Option<LitStr>,
    group: Option<LitStr>,
}

fn parse_options(args: TokenStream) -> syn::Result<Options> {
    let mut opts = Options {
        stream: None,
        group: None,
    };
    let parser = syn::meta::parser(|meta| {
        let slot = if meta.path.is_ident("stream") {
            &mut opts.stream
        } else if meta.path.is_ident("group") {
            &mut opts.group
        } else {
            let name = quote::ToTokens::to_token_stream(&meta.path).to_string();
            return Err(meta.error(format!(
                "unknown queue_handler option `{name}`; expected {OPTIONS}"
            )));
        };
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        let lit: LitStr = meta.value()?.parse()?;
        if slot.is_some() {
            return Err(syn::Error::new(
                lit.span(),
                format!("duplicate `{key}` option"),
            ));
        }
        if lit.value().trim().is_empty() {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "`{key}` must not be empty; name the Redis stream key, e.g. `{key} = \"orders\"`"
                ),
            ));
        }
        *slot = Some(lit);
        Ok(())
    });
    parser.parse2(args)?;
    Ok(opts)
}

fn typed(a: &FnArg) -> Option<&syn::PatType> {
    match a {
        FnArg::Typed(t) => Some(t),
        FnArg::Receiver(_) => None,
    }
}

/// How a queue handler is written, for error messages.
const HOW: &str = "a queue handler is `async fn name(tx: &mut Tx<'_>, msg: Payload) -> Result<(), Error>`, \
     or `async fn name(msg: Payload) -> Result<(), Error>` when it needs no database transaction";

/// The handler's form.
enum Form {
    /// `(tx: &mut Tx<'_>, msg: T)`: a `Handler`.
    Tx,
    /// `(msg: T)`: a `PlainHandler`.
    Plain,
}

/// The payload must be taken by value.
fn by_value(arg: &syn::PatType) -> syn::Result<()> {
    if let Type::Reference(r) = &*arg.ty {
        return Err(syn::Error::new_spanned(
            r,
            "the payload is decoded from the message and handed over by value; take it as `msg: Payload`, not a reference",
        ));
    }
    Ok(())
}

/// The form, and the payload argument: `msg: T`, taken by value.
fn payload(func: &ItemFn) -> syn::Result<(Form, &Pat, &Type)> {
    let sig = &func.sig;
    if let Some(receiver) = sig.receiver() {
        return Err(syn::Error::new_spanned(
            receiver,
            format!("a queue handler cannot take `self`; {HOW}"),
        ));
    }
    let args: Vec<_> = sig.inputs.iter().collect();
    match args.as_slice() {
        [only] => {
            let Some(only) = typed(only) else {
                return Err(syn::Error::new(sig.paren_token.span.join(), HOW));
            };
            if is_tx(&only.ty) {
                return Err(syn::Error::new(
                    sig.paren_token.span.join(),
                    format!("missing payload argument after the transaction: {HOW}"),
                ));
            }
            by_value(only)?;
            Ok((Form::Plain, &only.pat, &only.ty))
        }
        [first, second] => {
            let (Some(first), Some(second)) = (typed(first), typed(second)) else {
                return Err(syn::Error::new(sig.paren_token.span.join(), HOW));
            };
            if !is_tx(&first.ty) {
                return Err(syn::Error::new_spanned(
                    &first.ty,
                    format!(
                        "with two arguments, the first argument of a queue handler must be the transaction, `tx: &mut Tx<'_>`; {HOW}"
                    ),
                ));
            }
            by_value(second)?;
            Ok((Form::Tx, &second.pat, &second.ty))
        }
        [] => Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("missing payload argument: {HOW}"),
        )),
        [_, _, extra, ..] => Err(syn::Error::new_spanned(
            extra,
            format!("too many arguments: {HOW}"),
        )),
    }
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item) {
        Ok(f) => f,
        Err(e) => return e.into_compile_error(),
    };
    match expand_fn(args, &func) {
        Ok(tokens) => tokens,
        // Keep the fn so call sites and IDEs still resolve it.
        Err(e) => {
            let err = e.into_compile_error();
            quote!(#err #func)
        }
    }
}

fn expand_fn(args: TokenStream, func: &ItemFn) -> syn::Result<TokenStream> {
    let opts = parse_options(args)?;
    let Some(stream) = opts.stream else {
        return Err(syn::Error::new(
            Span::call_site(),
            "`#[queue_handler]` needs the stream key: `#[queue_handler(stream = \"orders\")]`",
        ));
    };
    if func.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            func.sig.fn_token,
            "the `async` keyword is missing from the queue handler's fn",
        ));
    }
    if !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &func.sig.generics,
            "a queue handler cannot be generic: its payload type is decoded from the stream",
        ));
    }
    let (form, _, payload_ty) = payload(func)?;

    let name = &func.sig.ident;
    let group = opts
        .group
        .unwrap_or_else(|| LitStr::new(&name.to_string(), name.span()));
    let vis = &func.vis;
    // Docs describe the handler (the struct); other attributes stay on the fn.
    let docs = func.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let mut call = func.clone();
    call.sig.ident = syn::Ident::new("call", name.span());
    call.attrs.retain(|a| !a.path().is_ident("doc"));
    let q = quote!(::safesync::__private::queue);
    let check_payload = quote_spanned! {payload_ty.span()=>
        const _: fn() = || {
            fn payload_is_deserializable<T: #q::__private::Payload>() {}
            payload_is_deserializable::<#payload_ty>();
        };
    };

    let handler_impl = match form {
        Form::Tx => quote! {
            #[automatically_derived]
            impl #q::Handler for #name {
                type Payload = #payload_ty;
                fn stream(&self) -> &'static str {
                    #stream
                }
                fn group(&self) -> &'static str {
                    #group
                }
                fn handle<'t>(
                    &'t self,
                    tx: &'t mut ::safesync::Tx<'_>,
                    msg: Self::Payload,
                ) -> ::safesync::__private::BoxFuture<'t, ::core::result::Result<(), ::safesync::Error>> {
                    ::std::boxed::Box::pin(#name::call(tx, msg))
                }
            }
        },
        Form::Plain => quote! {
            #[automatically_derived]
            impl #q::PlainHandler for #name {
                type Payload = #payload_ty;
                fn stream(&self) -> &'static str {
                    #stream
                }
                fn group(&self) -> &'static str {
                    #group
                }
                fn handle(
                    &self,
                    msg: Self::Payload,
                ) -> ::safesync::__private::BoxFuture<'_, ::core::result::Result<(), ::safesync::Error>> {
                    ::std::boxed::Box::pin(#name::call(msg))
                }
            }
        },
    };

    Ok(quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;

        #check_payload

        impl #name {
            /// The typed stream this handler consumes: `send` accepts only its payload type.
            #[allow(dead_code)]
            #vis const fn stream() -> #q::Stream<#payload_ty> {
                #q::Stream::new(#stream)
            }

            /// The handler's own fn, to call directly (e.g. in tests).
            #[allow(dead_code)]
            #call
        }

        #handler_impl
    })
}
