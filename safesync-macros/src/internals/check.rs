//! Rules a record must follow, each reported on the narrowest span.

use std::collections::HashSet;

use syn::LitStr;

use super::ast::Container;
use super::ctxt::Ctxt;

/// Which derive is checking, for messages and the version rule.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Derive {
    Versioned,
    Locked,
}

impl Derive {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Derive::Versioned => "Versioned",
            Derive::Locked => "Locked",
        }
    }
}

/// A plain SQL identifier: ASCII letter or `_`, then letters, digits, `_`;
/// at most 64 bytes (MySQL's limit; Postgres truncates at 63).
pub(crate) fn is_sql_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

fn check_ident(cx: &mut Ctxt, what: &str, lit: &LitStr) {
    let value = lit.value();
    if !is_sql_identifier(&value) {
        cx.error_spanned_by(
            lit,
            format!(
                "{what} `{value}` is not an SQL identifier; use ASCII letters, digits and `_`, \
                 not starting with a digit, at most 63 characters"
            ),
        );
    }
}

pub(crate) fn check(cx: &mut Ctxt, cont: &Container<'_>, derive: Derive) {
    let name = derive.name();
    let ident = cont.ident;

    if !cont.original.generics.params.is_empty() {
        cx.error_spanned_by(
            &cont.original.generics,
            format!("`#[derive({name})]` does not support generic structs"),
        );
    }

    match cont.attrs.table.get() {
        Some(lit) => check_ident(cx, "table name", lit),
        None => cx.error_spanned_by(
            ident,
            format!("`#[derive({name})]` needs `#[safesync(table = \"…\")]` on the struct"),
        ),
    }
    if let Some(lit) = cont.attrs.schema.get() {
        check_ident(cx, "schema name", lit);
    }

    let mut seen_columns = HashSet::new();
    let mut version_seen = false;
    for field in &cont.fields {
        let a = &field.attrs;
        if field.is_skipped() {
            for (set, key) in [
                (a.key.span(), "key"),
                (a.version.span(), "version"),
                (a.column.span(), "column"),
            ] {
                if let Some(span) = set {
                    cx.syn_error(syn::Error::new(
                        span,
                        format!("a `#[safesync(skip)]` field is not stored, so it cannot also be `{key}`"),
                    ));
                }
            }
            continue;
        }
        if let (Some(_), Some(span)) = (a.key.get(), a.version.span()) {
            cx.syn_error(syn::Error::new(
                span,
                "a field cannot be both `#[safesync(key)]` and `#[safesync(version)]`",
            ));
        }
        if let Some(span) = a.version.span() {
            if version_seen {
                cx.syn_error(syn::Error::new(
                    span,
                    "duplicate `#[safesync(version)]`: a record has exactly one version field",
                ));
            }
            version_seen = true;
        }
        if let Some(lit) = field.column_lit() {
            check_ident(cx, "column name", lit);
        }
        let column = field.column();
        if !seen_columns.insert(column.clone()) {
            cx.error_spanned_by(
                field.ident,
                format!("column `{column}` is used by two fields; rename one with `#[safesync(column = \"…\")]`"),
            );
        }
    }

    if !cont.columns().any(|f| f.is_key()) {
        cx.error_spanned_by(
            ident,
            format!("`#[derive({name})]` needs at least one field marked `#[safesync(key)]`"),
        );
    }
    if derive == Derive::Versioned && !version_seen {
        cx.error_spanned_by(
            ident,
            "`#[derive(Versioned)]` needs one field marked `#[safesync(version)]`",
        );
    }
}
