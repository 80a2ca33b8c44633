//! `#[queue_handler(stream = "…", group = "…")]` on
//! `async fn name(tx: &mut Tx<'_>, msg: Payload) -> Result<(), Error>`, or
//! on `async fn name(msg: Payload) -> Result<(), Error>` (no transaction).
//!
//! Expands to a unit struct with the fn's name — the handler value for
//! `Worker::handle(name)` — whose `name::stream()` is the typed stream and
//! `name::call(…)` the original fn, plus its `Handler` impl (with `tx`) or
//! `PlainHandler` impl (without).
//!
//! Options besides `stream` and `group`: `retry = <expr>` (a
//! `RetryPolicy`) or `retry = false`, for handlers with `tx` only;
//! `timeout = "30s"` (a whole number with `ms`, `s`, `m` or `h`, checked
//! here) or `timeout = <expr>` (a `Duration`); `crate = "…"`, the path to
//! safesync.
//!
//! Every mistake is reported in one build (through the derives' `Ctxt`).
//! Whenever the fn's signature names a payload, the full expansion is
//! emitted beside the errors, with a bad option left out, so call sites of
//! `name`, `name::stream()` and `name::call` do not error too; otherwise
//! the struct with `name::call`, the fn as written.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser as _;
use syn::spanned::Spanned as _;
use syn::{Expr, FnArg, ItemFn, Lit, LitStr, Type};

use crate::internals::attr::{
    Attr, crate_value, expr_value, path_string, skip_value, string_value,
};
use crate::internals::ctxt::Ctxt;
use crate::internals::symbol::{
    CRATE, GROUP, QUEUE_HANDLER, QUEUE_HANDLER_KEYS, RETRY, STREAM, TIMEOUT,
};
use crate::transactional::is_tx;

/// `retry = …`: a policy expression, or `false` for none.
enum Retry {
    Never(Span),
    Policy(Box<Expr>),
}

/// `timeout = …`: a literal checked here, in milliseconds, or an expression.
enum Timeout {
    Millis(u64, Span),
    Expr(Box<Expr>),
}

struct Options {
    stream: Attr<LitStr>,
    /// A `stream` key was written, even if its value was reported: no
    /// second error saying it is missing.
    stream_written: bool,
    group: Attr<LitStr>,
    retry: Attr<Retry>,
    timeout: Attr<Timeout>,
    krate: Attr<syn::Path>,
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"` in milliseconds, or why not.
fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let per = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "cannot read `{text}` as a timeout: write a whole number and a unit, `ms`, `s`, `m` or `h`, e.g. `timeout = \"30s\"`"
            ));
        }
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("cannot read `{text}` as a timeout: write a whole number before the unit, e.g. `timeout = \"30s\"`")
    })?;
    match n.checked_mul(per) {
        Some(0) => {
            Err("a timeout of zero would fail every message; e.g. `timeout = \"30s\"`".to_owned())
        }
        Some(ms) => Ok(ms),
        None => Err(format!("the timeout `{text}` is too long")),
    }
}

/// The value of `retry = …`.
fn parse_retry(value: Expr) -> syn::Result<Retry> {
    if let Expr::Lit(lit) = &value
        && let Lit::Bool(b) = &lit.lit
    {
        if b.value {
            return Err(syn::Error::new(
                b.span(),
                "handlers retry by default (the worker's `RetryPolicy`); write `retry = false` for none or `retry = my_policy()` for another policy",
            ));
        }
        return Ok(Retry::Never(b.span()));
    }
    Ok(Retry::Policy(Box::new(value)))
}

/// The value of `timeout = …`.
fn parse_timeout(value: Expr) -> syn::Result<Timeout> {
    if let Expr::Lit(lit) = &value {
        return match &lit.lit {
            Lit::Str(s) => parse_duration(&s.value())
                .map(|ms| Timeout::Millis(ms, s.span()))
                .map_err(|m| syn::Error::new(s.span(), m)),
            other => Err(syn::Error::new(
                other.span(),
                "a timeout needs a unit: write it as a string, e.g. `timeout = \"30s\"`, or a `Duration` expression",
            )),
        };
    }
    Ok(Timeout::Expr(Box::new(value)))
}

/// `key = <expr>` read by `parse` into `slot`; a missing or unreadable
/// value is reported.
fn parsed_value<T>(
    cx: &mut Ctxt,
    meta: &syn::meta::ParseNestedMeta<'_>,
    hint: &str,
    parse: fn(Expr) -> syn::Result<T>,
    slot: &mut Attr<T>,
) -> syn::Result<()> {
    let key = path_string(&meta.path);
    if let Some(value) = expr_value(cx, meta, &key, "a value", hint)? {
        match parse(value) {
            Ok(v) => slot.set(cx, meta.path.span(), v),
            Err(e) => cx.syn_error(e),
        }
    }
    Ok(())
}

/// Every option; each mistake is reported and skipped, and parsing goes on.
fn parse_options(cx: &mut Ctxt, args: TokenStream) -> Options {
    let mut opts = Options {
        stream: Attr::of(QUEUE_HANDLER, STREAM),
        stream_written: false,
        group: Attr::of(QUEUE_HANDLER, GROUP),
        retry: Attr::of(QUEUE_HANDLER, RETRY),
        timeout: Attr::of(QUEUE_HANDLER, TIMEOUT),
        krate: Attr::of(QUEUE_HANDLER, CRATE),
    };
    let parser = syn::meta::parser(|meta| {
        let span = meta.path.span();
        if meta.path.is_ident(STREAM) || meta.path.is_ident(GROUP) {
            let is_stream = meta.path.is_ident(STREAM);
            opts.stream_written |= is_stream;
            let (key, example, what) = if is_stream {
                (STREAM, "orders", "the Redis stream key")
            } else {
                (GROUP, "billing", "the consumer group")
            };
            if let Some(lit) = string_value(cx, &meta, QUEUE_HANDLER, key, example)? {
                if lit.value().trim().is_empty() {
                    cx.error_spanned_by(
                        &lit,
                        format!(
                            "`{key}` must not be empty; name {what}, e.g. `{key} = \"{example}\"`"
                        ),
                    );
                } else if is_stream {
                    opts.stream.set(cx, span, lit);
                } else {
                    opts.group.set(cx, span, lit);
                }
            }
        } else if meta.path.is_ident(RETRY) {
            let hint = "write `#[queue_handler(retry = my_policy())]`, or `retry = false` for none";
            parsed_value(cx, &meta, hint, parse_retry, &mut opts.retry)?;
        } else if meta.path.is_ident(TIMEOUT) {
            let hint = "write `#[queue_handler(timeout = \"30s\")]` or `timeout = <Duration>`";
            parsed_value(cx, &meta, hint, parse_timeout, &mut opts.timeout)?;
        } else if meta.path.is_ident(CRATE) {
            if let Some(path) = crate_value(cx, &meta, QUEUE_HANDLER)? {
                opts.krate.set(cx, span, path);
            }
        } else {
            let name = path_string(&meta.path);
            cx.syn_error(meta.error(format!(
                "unknown queue_handler option `{name}`; expected {QUEUE_HANDLER_KEYS}"
            )));
            skip_value(&meta)?;
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(args) {
        cx.syn_error(e);
    }
    opts
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

/// The payload must be taken by value; `false` after reporting it is not.
fn by_value(cx: &mut Ctxt, arg: &syn::PatType) -> bool {
    if let Type::Reference(r) = &*arg.ty {
        cx.error_spanned_by(
            r,
            "the payload is decoded from the message and handed over by value; take it as `msg: Payload`, not a reference",
        );
        return false;
    }
    true
}

/// The form and the payload type (`msg: T`, taken by value); `None` after
/// reporting every mistake in the arguments.
fn payload<'a>(cx: &mut Ctxt, func: &'a ItemFn) -> Option<(Form, &'a Type)> {
    let sig = &func.sig;
    let parens = sig.paren_token.span.join();
    if let Some(receiver) = sig.receiver() {
        cx.error_spanned_by(
            receiver,
            format!("a queue handler cannot take `self`; {HOW}"),
        );
        return None;
    }
    let args: Vec<_> = sig.inputs.iter().filter_map(typed).collect();
    match args.as_slice() {
        [only] => {
            if is_tx(&only.ty) {
                cx.syn_error(syn::Error::new(
                    parens,
                    format!("missing payload argument after the transaction: {HOW}"),
                ));
                return None;
            }
            by_value(cx, only).then_some((Form::Plain, &*only.ty))
        }
        [first, second] => {
            let tx_first = is_tx(&first.ty);
            if !tx_first {
                cx.error_spanned_by(
                    &first.ty,
                    format!(
                        "with two arguments, the first argument of a queue handler must be the transaction, `tx: &mut Tx<'_>`; {HOW}"
                    ),
                );
            }
            // `(msg, tx)`, the two swapped, is one mistake, reported above.
            let by_value = is_tx(&second.ty) || by_value(cx, second);
            (tx_first && by_value).then_some((Form::Tx, &*second.ty))
        }
        [] => {
            cx.syn_error(syn::Error::new(
                parens,
                format!("missing payload argument: {HOW}"),
            ));
            None
        }
        [_, _, extra, ..] => {
            cx.error_spanned_by(extra, format!("too many arguments: {HOW}"));
            None
        }
    }
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let opts = parse_options(&mut cx, args);
    let expanded = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => expand_fn(&mut cx, opts, &func),
        Err(e) => {
            cx.syn_error(syn::Error::new(
                e.span(),
                format!("`#[queue_handler]` goes on an `async fn`: {e}"),
            ));
            item
        }
    };
    let errors = cx.check().err().map(syn::Error::into_compile_error);
    quote!(#errors #expanded)
}

/// The `retry_policy` and `timeout` methods of the handler impl, from the
/// `retry` and `timeout` options (none when not given).
fn settings_fns(
    cx: &mut Ctxt,
    krate: &TokenStream,
    form: &Form,
    retry: Attr<Retry>,
    timeout: Attr<Timeout>,
) -> (Option<TokenStream>, Option<TokenStream>) {
    let retry = match (form, retry.span()) {
        (Form::Plain, Some(span)) => {
            cx.syn_error(syn::Error::new(
                span,
                "`retry` is for handlers that take `tx`: a plain handler has no transaction to run again (its failures are delivered again after `claim_idle`)",
            ));
            None
        }
        _ => retry.take(),
    };
    let retry_fn = retry.map(|retry| {
        let policy = match retry {
            Retry::Never(span) => quote_spanned!(span=> #krate::RetryPolicy::never()),
            Retry::Policy(expr) => quote_spanned!(expr.span()=> #expr),
        };
        quote! {
            fn retry_policy(&self) -> ::core::option::Option<#krate::RetryPolicy> {
                let policy: #krate::RetryPolicy = #policy;
                ::core::option::Option::Some(policy)
            }
        }
    });
    let timeout_fn = timeout.take().map(|timeout| {
        let duration = match timeout {
            Timeout::Millis(ms, span) => {
                quote_spanned!(span=> ::core::time::Duration::from_millis(#ms))
            }
            Timeout::Expr(expr) => quote_spanned!(expr.span()=> #expr),
        };
        quote! {
            fn timeout(&self) -> ::core::option::Option<::core::time::Duration> {
                let timeout: ::core::time::Duration = #duration;
                ::core::option::Option::Some(timeout)
            }
        }
    });
    (retry_fn, timeout_fn)
}

/// The handler struct, its `stream()` and `call`, and its handler impl —
/// or, when the signature names no payload, the struct with `call` alone.
fn expand_fn(cx: &mut Ctxt, opts: Options, func: &ItemFn) -> TokenStream {
    let name = &func.sig.ident;
    let krate = opts.krate.krate();
    let stream = opts.stream.get().cloned();
    if stream.is_none() && !opts.stream_written {
        cx.syn_error(syn::Error::new(
            Span::call_site(),
            "`#[queue_handler]` needs the stream key: `#[queue_handler(stream = \"orders\")]`",
        ));
    }
    // Reported, then expanded as if `async` were written.
    if func.sig.asyncness.is_none() {
        cx.error_spanned_by(
            func.sig.fn_token,
            "the `async` keyword is missing from the queue handler's fn",
        );
    }
    let generic = !func.sig.generics.params.is_empty();
    if generic {
        cx.error_spanned_by(
            &func.sig.generics,
            "a queue handler cannot be generic: its payload type is decoded from the stream",
        );
    }
    let payload = payload(cx, func);

    let vis = &func.vis;
    // Docs describe the handler (the struct); other attributes stay on the fn.
    let docs = func.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let mut call = func.clone();
    call.sig.ident = syn::Ident::new("call", name.span());
    call.attrs.retain(|a| !a.path().is_ident("doc"));
    let strukt = quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;
    };
    let (form, payload_ty) = match payload {
        Some(found) if !generic => found,
        // No payload type to build a handler on: the struct and `call` as
        // written keep `name` and `name::call` resolving.
        _ => {
            return quote! {
                #strukt
                impl #name {
                    #[allow(dead_code)]
                    #call
                }
            };
        }
    };
    call.sig.asyncness = Some(syn::Token![async](func.sig.fn_token.span));
    let settings = settings_fns(cx, &krate, &form, opts.retry, opts.timeout);
    // A missing stream was reported; the fn's name stands in.
    let stream = stream.unwrap_or_else(|| LitStr::new(&name.to_string(), name.span()));
    let group = opts
        .group
        .take()
        .unwrap_or_else(|| LitStr::new(&name.to_string(), name.span()));
    let q = quote!(#krate::__private::queue);
    let check_payload = quote_spanned! {payload_ty.span()=>
        const _: fn() = || {
            fn payload_is_deserializable<T: #q::__private::Payload>() {}
            payload_is_deserializable::<#payload_ty>();
        };
    };

    let handler_impl = handler_impl(&krate, name, &form, payload_ty, &stream, &group, settings);

    quote! {
        #strukt

        #check_payload

        impl #name {
            /// The typed stream this handler consumes: `send` accepts only its payload type.
            #[allow(dead_code)]
            #vis const fn stream() -> #q::Stream<#payload_ty> {
                #q::Stream::new(#stream)
            }

            /// The typed stream of this handler's payload under a name chosen at runtime.
            #[allow(dead_code)]
            #vis fn stream_named(
                name: impl ::core::convert::Into<::std::borrow::Cow<'static, str>>,
            ) -> #q::Stream<#payload_ty> {
                #q::Stream::named(name)
            }

            /// This handler on a stream and in a group chosen at runtime: `Worker::handle` takes it.
            #[allow(dead_code)]
            #vis fn on(
                self,
                stream: impl ::core::convert::Into<::std::string::String>,
                group: impl ::core::convert::Into<::std::string::String>,
            ) -> #q::Routed<Self> {
                #q::Routed::new(self, stream, group)
            }

            /// The handler's own fn, to call directly (e.g. in tests).
            #[allow(dead_code)]
            #call
        }

        #handler_impl
    }
}

/// `impl Handler` (with `tx`) or `impl PlainHandler` for the struct `name`,
/// with the `retry_policy` and `timeout` methods of `settings`.
fn handler_impl(
    krate: &TokenStream,
    name: &syn::Ident,
    form: &Form,
    payload_ty: &Type,
    stream: &LitStr,
    group: &LitStr,
    settings: (Option<TokenStream>, Option<TokenStream>),
) -> TokenStream {
    let (retry_fn, timeout_fn) = settings;
    let q = quote!(#krate::__private::queue);
    match form {
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
                    tx: &'t mut #krate::Tx<'_>,
                    msg: Self::Payload,
                ) -> #krate::__private::BoxFuture<'t, ::core::result::Result<(), #krate::Error>> {
                    ::std::boxed::Box::pin(#name::call(tx, msg))
                }
                #retry_fn
                #timeout_fn
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
                ) -> #krate::__private::BoxFuture<'_, ::core::result::Result<(), #krate::Error>> {
                    ::std::boxed::Box::pin(#name::call(msg))
                }
                #timeout_fn
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn timeouts_are_whole_numbers_with_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration(" 5m "), Ok(300_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        for bad in ["30", "s", "1.5s", "30 seconds", "-1s", "", "10d"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("timeout = \"30s\""), "{bad}: {err}");
        }
        assert!(parse_duration("0ms").unwrap_err().contains("zero"));
        assert!(
            parse_duration("99999999999999999h")
                .unwrap_err()
                .contains("too long")
        );
    }
}
