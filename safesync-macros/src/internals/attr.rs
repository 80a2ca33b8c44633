//! Parsing of `#[safesync(...)]` on the struct and on its fields.

use syn::spanned::Spanned;
use syn::{Attribute, LitStr};

use super::ctxt::Ctxt;
use super::symbol::{
    COLUMN, CONTAINER_KEYS, CRATE, FIELD_KEYS, KEY, SAFESYNC, SCHEMA, SKIP, TABLE, VERSION,
};

/// A value given once, with the span of the attribute that gave it.
pub(crate) struct Attr<T> {
    name: &'static str,
    value: Option<(proc_macro2::Span, T)>,
}

impl<T> Attr<T> {
    fn none(name: &'static str) -> Self {
        Attr { name, value: None }
    }

    fn set(&mut self, cx: &mut Ctxt, span: proc_macro2::Span, value: T) {
        if self.value.is_some() {
            cx.syn_error(syn::Error::new(
                span,
                format!("duplicate `#[safesync({})]`", self.name),
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
}

/// `#[safesync(table = "…", schema = "…", crate = "…")]` on the struct.
pub(crate) struct Container {
    pub(crate) table: Attr<LitStr>,
    pub(crate) schema: Attr<LitStr>,
    pub(crate) krate: Attr<syn::Path>,
}

impl Container {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut c = Container {
            table: Attr::none(TABLE),
            schema: Attr::none(SCHEMA),
            krate: Attr::none(CRATE),
        };
        for attr in attrs.iter().filter(|a| a.path().is_ident(SAFESYNC)) {
            let res = attr.parse_nested_meta(|meta| {
                let span = meta.path.span();
                if meta.path.is_ident(TABLE) {
                    let s: LitStr = meta.value()?.parse()?;
                    c.table.set(cx, span, s);
                } else if meta.path.is_ident(SCHEMA) {
                    let s: LitStr = meta.value()?.parse()?;
                    c.schema.set(cx, span, s);
                } else if meta.path.is_ident(CRATE) {
                    let s: LitStr = meta.value()?.parse()?;
                    let path = s.parse::<syn::Path>().map_err(|_| {
                        syn::Error::new(s.span(), "`crate` must be a path, e.g. `crate = \"::safesync\"`")
                    })?;
                    c.krate.set(cx, span, path);
                } else {
                    let name = meta.path.to_token_stream_string();
                    return Err(meta.error(format!(
                        "unknown safesync attribute `{name}` on a struct; expected one of {CONTAINER_KEYS}"
                    )));
                }
                Ok(())
            });
            if let Err(e) = res {
                cx.syn_error(e);
            }
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
}

impl Field {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut f = Field {
            key: Attr::none(KEY),
            version: Attr::none(VERSION),
            column: Attr::none(COLUMN),
            skip: Attr::none(SKIP),
        };
        for attr in attrs.iter().filter(|a| a.path().is_ident(SAFESYNC)) {
            let res = attr.parse_nested_meta(|meta| {
                let span = meta.path.span();
                if meta.path.is_ident(KEY) {
                    f.key.set(cx, span, ());
                } else if meta.path.is_ident(VERSION) {
                    f.version.set(cx, span, ());
                } else if meta.path.is_ident(SKIP) {
                    f.skip.set(cx, span, ());
                } else if meta.path.is_ident(COLUMN) {
                    let s: LitStr = meta.value()?.parse()?;
                    f.column.set(cx, span, s);
                } else {
                    let name = meta.path.to_token_stream_string();
                    return Err(meta.error(format!(
                        "unknown safesync attribute `{name}`; expected one of {FIELD_KEYS}"
                    )));
                }
                Ok(())
            });
            if let Err(e) = res {
                cx.syn_error(e);
            }
        }
        f
    }
}

trait PathString {
    fn to_token_stream_string(&self) -> String;
}

impl PathString for syn::Path {
    fn to_token_stream_string(&self) -> String {
        quote::ToTokens::to_token_stream(self)
            .to_string()
            .replace(' ', "")
    }
}
