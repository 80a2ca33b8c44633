//! Rules a record must follow, each reported on the narrowest span.

use std::collections::HashMap;

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
/// at most 63 bytes, the shortest limit among the supported backends.
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
            format!("`#[derive({name})]` does not support generic structs; give each field a concrete type"),
        );
    }

    match cont.attrs.table.get() {
        Some(lit) => check_ident(cx, "table name", lit),
        // A malformed `table = …` was already reported.
        None if cont.attrs.malformed => {}
        None => cx.error_spanned_by(
            ident,
            format!("`#[derive({name})]` needs `#[safesync(table = \"…\")]` on the struct"),
        ),
    }
    if let Some(lit) = cont.attrs.schema.get() {
        check_ident(cx, "schema name", lit);
    }

    // The whole-struct rules below stay quiet when a field's attributes were
    // already reported: a misspelled `kye` must not also read as "no key".
    let mut fields_malformed = false;
    let mut key_marked = false;
    let mut version_marked = false;
    let mut seen_columns: HashMap<String, &syn::Ident> = HashMap::new();
    let mut version_seen = false;
    for field in &cont.fields {
        let a = &field.attrs;
        fields_malformed |= a.malformed;
        // A marked field counts as present even when it is wrongly skipped:
        // that mistake gets its own error just below.
        key_marked |= field.is_key();
        version_marked |= field.is_version();
        if field.is_skipped() {
            for (set, key) in [
                (a.key.span(), "key"),
                (a.version.span(), "version"),
                (a.column.span(), "column = \"…\""),
            ] {
                if let Some(span) = set {
                    cx.syn_error(syn::Error::new(
                        span,
                        format!("a `#[safesync(skip)]` field is not stored, so it cannot also be `#[safesync({key})]`; remove one of them"),
                    ));
                }
            }
            continue;
        }
        if let Some(span) = a.version.span()
            && field.is_key()
        {
            cx.syn_error(syn::Error::new(
                span,
                "a field cannot be both `#[safesync(key)]` and `#[safesync(version)]`; the version needs its own field",
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
        let column = field.column();
        if let Some(lit) = field.column_lit() {
            check_ident(cx, "column name", lit);
        } else if !is_sql_identifier(&column) {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "field name `{column}` is not a plain SQL identifier; name its column with \
                     `#[safesync(column = \"…\")]` (ASCII letters, digits and `_`, at most 63 characters)"
                ),
            );
        }
        if let Some(first) = seen_columns.get(&column) {
            let msg = format!(
                "column `{column}` is already used by field `{first}`; \
                 give one of them another name with `#[safesync(column = \"…\")]`"
            );
            match field.column_lit() {
                Some(lit) => cx.error_spanned_by(lit, msg),
                None => cx.error_spanned_by(field.ident, msg),
            }
        } else {
            seen_columns.insert(column, field.ident);
        }
    }

    if !key_marked && !fields_malformed {
        cx.error_spanned_by(
            ident,
            format!("`#[derive({name})]` needs at least one field marked `#[safesync(key)]`"),
        );
    }
    if derive == Derive::Versioned && !version_marked && !fields_malformed {
        cx.error_spanned_by(
            ident,
            "`#[derive(Versioned)]` needs one field marked `#[safesync(version)]`",
        );
    }
}
