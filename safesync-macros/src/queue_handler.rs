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
//! `RetryPolicy`) or `retry = false`, for handlers with `tx` only; and
//! `timeout = "30s"` (a whole number with `ms`, `s`, `m` or `h`, checked
//! here) or `timeout = <expr>` (a `Duration`).

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser as _;
use syn::spanned::Spanned as _;
use syn::{Expr, FnArg, ItemFn, Lit, LitStr, Pat, Type};

use crate::transactional::is_tx;

const OPTIONS: &str = "`stream = \"…\"`, `group = \"…\"`, `retry = <RetryPolicy>` or `retry = false`, `timeout = \"30s\"` or `timeout = <Duration>`";

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
    stream: Option<LitStr>,
    group: Option<LitStr>,
    retry: Option<(Retry, Span)>,
    timeout: Option<Timeout>,
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

fn parse_options(args: TokenStream) -> syn::Result<Options> {
    let mut opts = Options {
        stream: None,
        group: None,
        retry: None,
        timeout: None,
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("retry") || meta.path.is_ident("timeout") {
            let retry = meta.path.is_ident("retry");
            let span = meta.path.span();
            let value: Expr = meta.value()?.parse()?;
            let duplicate = if retry {
                opts.retry.is_some()
            } else {
                opts.timeout.is_some()
            };
            if duplicate {
                let key = if retry { "retry" } else { "timeout" };
                return Err(syn::Error::new(span, format!("duplicate `{key}` option")));
            }
            if retry {
                opts.retry = Some((parse_retry(value)?, span));
            } else {
                opts.timeout = Some(parse_timeout(value)?);
            }
            return Ok(());
        }
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

/// The `retry_policy` and `timeout` methods of the handler impl, from the
/// `retry` and `timeout` options (none when not given).
fn settings_fns(
    form: &Form,
    retry: Option<(Retry, Span)>,
    timeout: Option<Timeout>,
) -> syn::Result<(Option<TokenStream>, Option<TokenStream>)> {
    if let (Form::Plain, Some((_, span))) = (form, &retry) {
        return Err(syn::Error::new(
            *span,
            "`retry` is for handlers that take `tx`: a plain handler has no transaction to run again (its failures are delivered again after `claim_idle`)",
        ));
    }
    let core = quote!(::safesync);
    let retry_fn = retry.map(|(retry, _)| {
        let policy = match retry {
            Retry::Never(span) => quote_spanned!(span=> #core::RetryPolicy::never()),
            Retry::Policy(expr) => quote_spanned!(expr.span()=> #expr),
        };
        quote! {
            fn retry_policy(&self) -> ::core::option::Option<#core::RetryPolicy> {
                let policy: #core::RetryPolicy = #policy;
                ::core::option::Option::Some(policy)
            }
        }
    });
    let timeout_fn = timeout.map(|timeout| {
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
    Ok((retry_fn, timeout_fn))
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
    let (retry_fn, timeout_fn) = settings_fns(&form, opts.retry, opts.timeout)?;

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
                ) -> ::safesync::__private::BoxFuture<'_, ::core::result::Result<(), ::safesync::Error>> {
                    ::std::boxed::Box::pin(#name::call(msg))
                }
                #timeout_fn
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
