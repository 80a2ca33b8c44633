//! `#[transactional]`: an `async fn` whose first argument is the transaction
//! becomes a wrapper of the same name taking `&Db`, which runs the body in a
//! new transaction (one per attempt under `retry`).
//!
//! ```text
//! #[transactional(retry)]
//! pub async fn deposit(tx: &mut Tx<'_>, id: i64, note: String, seen: &AtomicU32) -> Result<(), Error> { body }
//! ```
//! becomes, in substance,
//! ```text
//! pub async fn deposit(db: &::safesync::Db, id: i64, note: String, seen: &AtomicU32) -> Result<(), Error> {
//!     async fn deposit(tx: &mut Tx<'_>, id: i64, note: String, seen: &AtomicU32) -> Result<(), Error> { body }
//!     <Result<(), Error> as RetryResult>::from_result(
//!         db.retry(RetryPolicy::default(), move |tx| {
//!             let id = { let arg = &id; RetryArg::per_attempt(arg) }; // a copy per attempt
//!             let note = { let arg = &note; RetryArg::per_attempt(arg) }; // (not `seen`)
//!             box_future(async move {
//!                 <Result<(), Error> as RetryResult>::into_result(deposit(tx, id, note, seen).await)
//!             })
//!         })
//!         .await,
//!     )
//! }
//! ```
//! The nested fn has the user's name, so a recursive call in the body means
//! the transaction-taking fn, as written. Without `retry` the arguments are
//! moved into one `db.transaction(…)`. With `crate = "ss"`, every
//! `::safesync` above is `ss`.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, GenericParam, ItemFn, Pat, PatType, ReturnType, Token, Type};

use crate::internals::attr::{Attr, at_end_of_item, crate_value, path_string, skip_value};
use crate::internals::ctxt::Ctxt;
use crate::internals::symbol::{CRATE, RETRY, TRANSACTIONAL, TRANSACTIONAL_KEYS};

/// `retry` or `retry = <expr>`.
enum Policy {
    Default,
    Expr(Expr),
}

/// The parsed `#[transactional(…)]` options.
struct Options {
    /// Not given: one transaction.
    retry: Attr<Policy>,
    krate: Attr<syn::Path>,
}

/// The expansion: the wrapper, or the errors beside the best code that still
/// compiles (the wrapper when the signature allows one, else the fn as
/// written), so call sites and IDEs do not drown in follow-up errors. Every
/// mistake, in the options and in the signature, is reported in one build.
pub(crate) fn expand(args: TokenStream, item: &TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let options = parse_options(&mut cx, args);
    let expanded = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => wrapper(&mut cx, &options, &func).unwrap_or_else(|| quote!(#func)),
        Err(e) => {
            cx.syn_error(syn::Error::new(
                e.span(),
                format!("`#[transactional]` goes on an `async fn`: {e}"),
            ));
            item.clone()
        }
    };
    let errors = cx.check().err().map(syn::Error::into_compile_error);
    quote!(#errors #expanded)
}

/// `retry` | `retry = <expr>` | `crate = "…"`, comma-separated; an empty
/// list is fine. Each mistake is reported and skipped.
fn parse_options(cx: &mut Ctxt, args: TokenStream) -> Options {
    let mut retry = Attr::of(TRANSACTIONAL, RETRY);
    let mut krate = Attr::of(TRANSACTIONAL, CRATE);
    let parser = syn::meta::parser(|meta| {
        let span = meta.path.span();
        if meta.path.is_ident(RETRY) {
            if meta.input.peek(Token![=]) {
                let policy = Policy::Expr(meta.value()?.parse::<Expr>()?);
                retry.set(cx, span, policy);
            } else if at_end_of_item(&meta) {
                retry.set(cx, span, Policy::Default);
            } else {
                cx.syn_error(meta.error(
                    "`retry` takes no parentheses; write `#[transactional(retry)]` or \
                     `#[transactional(retry = my_policy())]`",
                ));
                skip_value(&meta)?;
            }
        } else if meta.path.is_ident(CRATE) {
            if let Some(path) = crate_value(cx, &meta, TRANSACTIONAL)? {
                krate.set(cx, span, path);
            }
        } else {
            let name = path_string(&meta.path);
            cx.syn_error(meta.error(format!(
                "unknown transactional option `{name}`; expected {TRANSACTIONAL_KEYS}"
            )));
            skip_value(&meta)?;
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
    }
    Options { retry, krate }
}

/// An argument after the transaction.
struct Arg<'a> {
    /// The wrapper's name for it: the user's when the pattern is a plain
    /// identifier, otherwise a generated one.
    name: syn::Ident,
    ty: &'a Type,
    /// A shared reference: handed to every attempt as it is.
    shared: bool,
}

/// The wrapper, or `None` when the signature leaves no wrapper to write.
/// Every mistake is reported to `cx`, those that leave no wrapper too.
fn wrapper(cx: &mut Ctxt, options: &Options, func: &ItemFn) -> Option<TokenStream> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let fn_name = &sig.ident;

    if sig.asyncness.is_none() {
        // Reported, then expanded as if `async` were written: the body is
        // most likely async code already.
        cx.error_spanned_by(sig.fn_token, "`#[transactional]` needs an `async fn`");
    }
    let qualified = qualifier(sig).inspect(|qualifier| {
        cx.error_spanned_by(
            qualifier,
            format!("`#[transactional]` does not support `{qualifier} fn`"),
        );
    });
    let ret = check_output(cx, &sig.output, sig);
    let tx_first = check_tx(cx, sig);
    let args = arguments(cx, sig, tx_first);
    let ret = ret.filter(|_| tx_first && qualified.is_none())?;

    // Errors about the return type (an error type `retry` cannot classify,
    // or one without `From<safesync::Error>`) are raised by several pieces
    // of the expansion; all of them are spanned at the error type, so rustc
    // reports one error there. The same holds for `db`, which is therefore
    // not hygienic: it is renamed when an argument is called `db`.
    let err_span = error_type_span(ret);
    let db_name = if args.iter().any(|a| a.name == "db") {
        "__safesync_db"
    } else {
        "db"
    };
    let db = syn::Ident::new(db_name, err_span);
    // Declared at the call site (where rustc's notes show parameters),
    // resolved like its uses.
    let db_param = syn::Ident::new(db_name, Span::call_site().resolved_at(err_span));

    // The nested fn: the user's fn as written (made async), without the
    // outer attributes, which go on the wrapper and cover it from there.
    let mut inner_sig = sig.clone();
    inner_sig.asyncness = Some(Token![async](sig.fn_token.span));
    let inner = quote!(#inner_sig #block);

    let krate = options.krate.krate();
    let run = run(options, &krate, sig, &args, &db, ret, err_span);
    let params = args.iter().map(|a| {
        let (name, ty) = (&a.name, a.ty);
        quote!(#name: #ty)
    });
    let asyncness = sig.asyncness.unwrap_or_default();
    let syn::Signature {
        fn_token,
        generics,
        output,
        ..
    } = sig;
    let where_clause = &generics.where_clause;
    Some(quote! {
        #(#attrs)*
        #vis #asyncness #fn_token #fn_name #generics (
            #db_param: &#krate::Db,
            #(#params),*
        ) #output #where_clause {
            #inner
            #run
        }
    })
}

/// Whether the first argument is the transaction, `tx: &mut Tx<'_>`;
/// reported when it is not.
fn check_tx(cx: &mut Ctxt, sig: &syn::Signature) -> bool {
    if let Some(receiver) = sig.receiver() {
        cx.error_spanned_by(
            receiver,
            "a `#[transactional]` fn cannot take `self`; take the transaction as the first \
             argument, `tx: &mut Tx<'_>`, and anything else as further arguments",
        );
        return false;
    }
    match sig.inputs.first() {
        None => {
            cx.syn_error(syn::Error::new(
                sig.paren_token.span.join(),
                "a `#[transactional]` fn takes the transaction as its first argument: \
                 `tx: &mut Tx<'_>`",
            ));
            false
        }
        Some(FnArg::Typed(first)) if !is_tx(&first.ty) => {
            cx.error_spanned_by(
                &first.ty,
                "the first argument of a `#[transactional]` fn must be the transaction, \
                 `tx: &mut Tx<'_>`; the wrapper takes `db: &Db` in its place",
            );
            false
        }
        Some(_) => true,
    }
}

/// The arguments after the transaction; `&mut` ones are reported (and then
/// treated as shared, which keeps the expansion compiling) — except a
/// transaction out of place, already reported by `check_tx`.
fn arguments<'a>(cx: &mut Ctxt, sig: &'a syn::Signature, tx_first: bool) -> Vec<Arg<'a>> {
    let mut args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate().skip(1) {
        let FnArg::Typed(PatType { pat, ty, .. }) = input else {
            continue; // a receiver elsewhere is a parse error already
        };
        let ty: &Type = ty;
        let shared = match peel(ty) {
            Type::Reference(r) if r.mutability.is_some() => {
                if tx_first || !is_tx(ty) {
                    cx.error_spanned_by(
                        ty,
                        "a `#[transactional]` fn takes no `&mut` argument besides the transaction: \
                     the body may run again in a new transaction; pass the value itself, a \
                     shared reference `&T`, or `&T` of a type with interior mutability",
                    );
                }
                true
            }
            Type::Reference(_) => true,
            _ => false,
        };
        let name = match &**pat {
            Pat::Ident(p) if p.subpat.is_none() && p.ident != sig.ident => p.ident.clone(),
            _ => format_ident!("__arg{}", i, span = Span::mixed_site()),
        };
        args.push(Arg { name, ty, shared });
    }
    args
}

/// The wrapper's body after the nested fn: one `db.transaction(…)`, or
/// `db.retry(…)` with a copy of the arguments per attempt.
fn run(
    options: &Options,
    krate: &TokenStream,
    sig: &syn::Signature,
    args: &[Arg<'_>],
    db: &syn::Ident,
    ret: &Type,
    err_span: Span,
) -> TokenStream {
    let p = quote!(#krate::__private);
    let tx = syn::Ident::new("tx", Span::mixed_site());
    let fn_name = &sig.ident;
    let turbofish = {
        let params: Vec<_> = sig
            .generics
            .params
            .iter()
            .filter_map(|param| match param {
                GenericParam::Type(t) => Some(&t.ident),
                GenericParam::Const(c) => Some(&c.ident),
                GenericParam::Lifetime(_) => None,
            })
            .collect();
        if params.is_empty() {
            quote!()
        } else {
            quote!(::<#(#params),*>)
        }
    };
    let names = args.iter().map(|a| &a.name);
    let call = quote!(#fn_name #turbofish (#tx, #(#names),*).await);

    // A `&mut` argument (reported) could not be handed to a second attempt:
    // one transaction keeps the expansion compiling.
    let has_mut_ref = args
        .iter()
        .any(|a| matches!(peel(a.ty), Type::Reference(r) if r.mutability.is_some()));
    let Some(policy) = options.retry.get().filter(|_| !has_mut_ref) else {
        let run = quote_spanned!(err_span=> #db.transaction);
        let run = call_at(
            err_span,
            run,
            quote!(move |#tx| #p::box_future(async move { #call })),
        );
        return quote_spanned!(err_span=> #run.await);
    };

    let policy = match policy {
        Policy::Default => {
            quote!(<#krate::RetryPolicy as ::core::default::Default>::default())
        }
        Policy::Expr(expr) => quote!(#expr),
    };
    let copies = args.iter().filter(|a| !a.shared).map(|a| {
        // At the argument's type: a type that is not `Clone` is reported
        // there. `arg` only shadows within the block.
        let span = a.ty.span();
        let name = &a.name;
        let arg = syn::Ident::new("arg", span);
        // The path wholly at the argument, as if written there: the
        // user's `crate = "…"` path resolves the same from there.
        let p = set_span(p.clone(), span);
        let copy = quote_spanned!(span=> #p::RetryArg::per_attempt(#arg));
        quote!(let #name = { let #arg = &#name; #copy };)
    });
    // `<R as RetryResult>` with `R` at the error type too: the trait is
    // checked against the qualified path's self type.
    let ret = respan(ret.to_token_stream(), err_span);
    let p_at_err = respan(p.clone(), err_span);
    let result = quote_spanned!(err_span=> <#ret as #p_at_err::RetryResult>);
    let into = call_at(
        err_span,
        quote_spanned!(err_span=> #result::into_result),
        call,
    );
    // Only `db` and `.await` at the error type: a policy of the wrong type
    // is reported at the policy.
    let run = quote! {
        #db.retry(#policy, move |#tx| {
            #(#copies)*
            #p::box_future(async move { #into })
        })
    };
    let run = quote_spanned!(err_span=> #run.await);
    call_at(
        err_span,
        quote_spanned!(err_span=> #result::from_result),
        run,
    )
}

/// `tokens` shown at `location`, each still resolved as before.
fn respan(tokens: TokenStream, location: Span) -> TokenStream {
    map_spans(tokens, &|span| location.resolved_at(span))
}

/// `tokens` at `span`, resolved from there too.
fn set_span(tokens: TokenStream, span: Span) -> TokenStream {
    map_spans(tokens, &|_| span)
}

/// `tokens` with every span, groups' included, replaced by `f(span)`.
fn map_spans(tokens: TokenStream, f: &impl Fn(Span) -> Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(g) = &token {
                let mut group = Group::new(g.delimiter(), map_spans(g.stream(), f));
                group.set_span(f(g.span()));
                TokenTree::Group(group)
            } else {
                token.set_span(f(token.span()));
                token
            }
        })
        .collect()
}

/// The call `callee(args)` with its parentheses at `span`.
fn call_at(span: Span, mut callee: TokenStream, args: TokenStream) -> TokenStream {
    let mut args = Group::new(Delimiter::Parenthesis, args);
    args.set_span(span);
    callee.extend([TokenTree::Group(args)]);
    callee
}

/// `const`, `unsafe` or `extern "…"`, which the wrapper cannot carry over.
fn qualifier(sig: &syn::Signature) -> Option<TokenStream> {
    if let Some(t) = &sig.constness {
        Some(quote!(#t))
    } else if let Some(t) = &sig.unsafety {
        Some(quote!(#t))
    } else {
        sig.abi.as_ref().map(|t| quote!(#t))
    }
}

/// The return type must be a `Result`: `Result<T, Error>`,
/// `safesync::Result<T>`, or an alias whose name ends in `Result`.
/// Returns the return type, or `None` after reporting it.
fn check_output<'a>(
    cx: &mut Ctxt,
    output: &'a ReturnType,
    sig: &syn::Signature,
) -> Option<&'a Type> {
    const MSG: &str = "a `#[transactional]` fn returns `Result<T, safesync::Error>`: \
                       `Ok` commits, `Err` rolls back";
    match output {
        ReturnType::Default => {
            cx.syn_error(syn::Error::new(
                sig.paren_token.span.close(),
                format!("{MSG}; add `-> Result<(), Error>`"),
            ));
            None
        }
        ReturnType::Type(_, ty) => match peel(ty) {
            Type::Path(p)
                if p.path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident.to_string().ends_with("Result")) =>
            {
                Some(ty)
            }
            _ => {
                cx.error_spanned_by(ty, MSG);
                None
            }
        },
    }
}

/// Where errors about the return type go: its error type (`Error` in
/// `Result<T, Error>`, `AppError` in `Result<T, my::AppError>`), or the
/// `Result` of `safesync::Result<T>` and other aliases.
fn error_type_span(ret: &Type) -> Span {
    let Type::Path(path) = peel(ret) else {
        return ret.span();
    };
    let Some(last) = path.path.segments.last() else {
        return ret.span();
    };
    let error = match &last.arguments {
        syn::PathArguments::AngleBracketed(args) => args.args.iter().nth(1),
        _ => None,
    };
    match error {
        Some(syn::GenericArgument::Type(ty)) => match peel(ty) {
            Type::Path(p) => p
                .path
                .segments
                .last()
                .map_or_else(|| ty.span(), |s| s.ident.span()),
            other => other.span(),
        },
        Some(other) => other.span(),
        None => last.ident.span(),
    }
}

/// `&mut Tx<'_>`, `&mut safesync::Tx<'_>`, or any `&mut` path ending in `Tx`.
pub(crate) fn is_tx(ty: &Type) -> bool {
    match peel(ty) {
        Type::Reference(r) if r.mutability.is_some() => match peel(&r.elem) {
            Type::Path(p) => {
                p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Tx")
            }
            _ => false,
        },
        _ => false,
    }
}

/// The type inside invisible groups and parentheses.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => peel(&g.elem),
        Type::Paren(p) => peel(&p.elem),
        other => other,
    }
}
