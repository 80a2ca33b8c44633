//! Parsing of `#[safesync(...)]` on the struct and on its fields, and the
//! value readers shared with the attribute macros' options (`args`).
//!
//! A malformed key is reported and skipped, and parsing goes on with the next
//! key, so one build shows every mistake. Whatever was malformed is remembered
//! (`Container::malformed`, `Field::malformed`) so that the whole-struct
//! checks do not add a second, misleading error about it ("needs a key" after
//! a misspelled `kye`).

use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, LitStr, Token};

use super::ctxt::Ctxt;
use super::symbol::{
    COLUMN, CONTAINER_KEYS, CRATE, FIELD_KEYS, KEY, SAFESYNC, SCHEMA, SKIP, TABLE, VERSION,
};

/// A value given once, with the span of the key that gave it.
pub(crate) struct Attr<T> {
    /// The attribute it belongs to: `safesync`, `transactional`, …
    owner: &'static str,
    name: &'static str,
    value: Option<(proc_macro2::Span, T)>,
}

impl<T> Attr<T> {
    /// A `#[safesync(name …)]` key of the derives.
    fn none(name: &'static str) -> Self {
        Attr::of(SAFESYNC, name)
    }

    /// A key of `#[owner(…)]`, not given yet.
    pub(crate) fn of(owner: &'static str, name: &'static str) -> Self {
        Attr {
            owner,
            name,
            value: None,
        }
    }

    /// Sets the value; a second one is reported at `span` and ignored.
    pub(crate) fn set(&mut self, cx: &mut Ctxt, span: proc_macro2::Span, value: T) {
        if self.value.is_some() {
            cx.syn_error(syn::Error::new(
                span,
                format!("duplicate `#[{}({})]`", self.owner, self.name),
            ));
        } else {
            self.value = Some((span, value));
        }
    }

    pub(crate) fn get(&self) -> Option<&T> {
        self.value.as_ref().map(|(_, v)| v)
    }

    pub(crate) fn span(&self) -> Option<proc_macro2::Span> {
        self.value.as_ref().map(|(s, _)| *s)
    }

    pub(crate) fn take(self) -> Option<T> {
        self.value.map(|(_, v)| v)
    }
}

impl Attr<syn::Path> {
    /// The path generated code uses for the runtime: the `crate = "…"`
    /// given, or `::safesync`.
    pub(crate) fn krate(&self) -> proc_macro2::TokenStream {
        self.get().map_or_else(
            || quote::quote!(::safesync),
            quote::ToTokens::to_token_stream,
        )
    }
}

/// `#[safesync(table = "…", schema = "…", crate = "…")]` on the struct.
pub(crate) struct Container {
    pub(crate) table: Attr<LitStr>,
    pub(crate) schema: Attr<LitStr>,
    pub(crate) krate: Attr<syn::Path>,
    /// An error was already reported about these attributes.
    pub(crate) malformed: bool,
}

impl Container {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut c = Container {
            table: Attr::none(TABLE),
            schema: Attr::none(SCHEMA),
            krate: Attr::none(CRATE),
            malformed: false,
        };
        for attr in attrs.iter().filter(|a| a.path().is_ident(SAFESYNC)) {
            let errors_before = cx.len();
            let res = attr.parse_nested_meta(|meta| {
                let span = meta.path.span();
                if meta.path.is_ident(TABLE) {
                    if let Some(s) = string_value(cx, &meta, SAFESYNC, TABLE, "accounts")? {
                        c.table.set(cx, span, s);
                    }
                } else if meta.path.is_ident(SCHEMA) {
                    if let Some(s) = string_value(cx, &meta, SAFESYNC, SCHEMA, "billing")? {
                        c.schema.set(cx, span, s);
                    }
                } else if meta.path.is_ident(CRATE) {
                    if let Some(path) = crate_value(cx, &meta, SAFESYNC)? {
                        c.krate.set(cx, span, path);
                    }
                } else {
                    let name = path_string(&meta.path);
                    cx.syn_error(meta.error(format!(
                        "unknown safesync attribute `{name}` on a struct; expected one of {CONTAINER_KEYS}"
                    )));
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(e) = res {
                cx.syn_error(e);
            }
            c.malformed |= cx.len() > errors_before;
        }
        c
    }
}

/// `#[safesync(key | version | column = "…" | skip)]` on a field.
pub(crate) struct Field {
    pub(crate) key: Attr<()>,
    pub(crate) version: Attr<()>,
    pub(crate) column: Attr<LitStr>,
    pub(crate) skip: Attr<()>,
    /// An error was already reported about these attributes.
    pub(crate) malformed: bool,
}

impl Field {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut f = Field {
            key: Attr::none(KEY),
            version: Attr::none(VERSION),
            column: Attr::none(COLUMN),
            skip: Attr::none(SKIP),
            malformed: false,
        };
        for attr in attrs.iter().filter(|a| a.path().is_ident(SAFESYNC)) {
            let errors_before = cx.len();
            let res = attr.parse_nested_meta(|meta| {
                let span = meta.path.span();
                if meta.path.is_ident(KEY) {
                    flag(cx, &meta, KEY)?;
                    f.key.set(cx, span, ());
                } else if meta.path.is_ident(VERSION) {
                    flag(cx, &meta, VERSION)?;
                    f.version.set(cx, span, ());
                } else if meta.path.is_ident(SKIP) {
                    flag(cx, &meta, SKIP)?;
                    f.skip.set(cx, span, ());
                } else if meta.path.is_ident(COLUMN) {
                    if let Some(s) = string_value(cx, &meta, SAFESYNC, COLUMN, "account_id")? {
                        f.column.set(cx, span, s);
                    }
                } else {
                    let name = path_string(&meta.path);
                    cx.syn_error(meta.error(format!(
                        "unknown safesync attribute `{name}`; expected one of {FIELD_KEYS}"
                    )));
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(e) = res {
                cx.syn_error(e);
            }
            f.malformed |= cx.len() > errors_before;
        }
        f
    }
}

/// A bare flag such as `key`: reports `key = …` or `key(…)` and skips it.
fn flag(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, name: &str) -> syn::Result<()> {
    if !at_end_of_item(meta) {
        cx.syn_error(meta.error(format!(
            "`{name}` is a flag and takes no value; write `#[safesync({name})]`"
        )));
        skip_value(meta)?;
    }
    Ok(())
}

/// The string of `name = "…"` in `#[owner(…)]`; `None` after reporting a
/// missing or non-string value.
pub(crate) fn string_value(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    owner: &str,
    name: &str,
    example: &str,
) -> syn::Result<Option<LitStr>> {
    let hint = format!("write `#[{owner}({name} = \"{example}\")]`");
    let Some(expr) = expr_value(cx, meta, name, "a string value", &hint)? else {
        return Ok(None);
    };
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Ok(Some(s)),
        other => {
            cx.error_spanned_by(other, format!("`{name}` takes a string literal; {hint}"));
            Ok(None)
        }
    }
}

/// The expression of `name = <expr>`; `None` after reporting a missing
/// value (`what` it needs, and a `hint` how to write one).
pub(crate) fn expr_value(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    name: &str,
    what: &str,
    hint: &str,
) -> syn::Result<Option<syn::Expr>> {
    if !meta.input.peek(Token![=]) {
        cx.syn_error(meta.error(format!("`{name}` needs {what}; {hint}")));
        skip_value(meta)?;
        return Ok(None);
    }
    Ok(Some(meta.value()?.parse()?))
}

/// The path of `crate = "…"` in `#[owner(…)]`: where the generated code
/// finds safesync when it is renamed or re-exported. `None` after reporting
/// a value that is not a string holding a path.
pub(crate) fn crate_value(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    owner: &str,
) -> syn::Result<Option<syn::Path>> {
    let Some(s) = string_value(cx, meta, owner, CRATE, "::safesync")? else {
        return Ok(None);
    };
    let path = s.parse::<syn::Path>().ok();
    if path.is_none() {
        cx.error_spanned_by(&s, "`crate` must be a path, e.g. `crate = \"::safesync\"`");
    }
    Ok(path)
}

/// Whether the current key is followed by `,` or the end of the list.
pub(crate) fn at_end_of_item(meta: &ParseNestedMeta<'_>) -> bool {
    meta.input.is_empty() || meta.input.peek(Token![,])
}

/// Consumes `= value` or `(…)` after a key that was already reported.
pub(crate) fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        // Left unread, the contents would be reported as unexpected.
        let _: proc_macro2::TokenStream = content.parse()?;
    }
    Ok(())
}

/// The key as written, for messages: `colour`, `a::b`.
pub(crate) fn path_string(path: &syn::Path) -> String {
    quote::ToTokens::to_token_stream(path)
        .to_string()
        .replace(' ', "")
}
