//! The struct as the derives see it.

use syn::{Data, DeriveInput, Fields, Ident, LitStr, Type};

use super::attr;
use super::ctxt::Ctxt;

pub(crate) struct Container<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) original: &'a DeriveInput,
    pub(crate) attrs: attr::Container,
    pub(crate) fields: Vec<Field<'a>>,
}

pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) attrs: attr::Field,
}

impl Field<'_> {
    /// The column name: `column = "…"` or the field's name.
    pub(crate) fn column(&self) -> String {
        match self.attrs.column.get() {
            Some(lit) => lit.value(),
            None => self.ident.to_string().trim_start_matches("r#").to_owned(),
        }
    }

    pub(crate) fn column_lit(&self) -> Option<&LitStr> {
        self.attrs.column.get()
    }

    pub(crate) fn is_key(&self) -> bool {
        self.attrs.key.get().is_some()
    }

    pub(crate) fn is_version(&self) -> bool {
        self.attrs.version.get().is_some()
    }

    pub(crate) fn is_skipped(&self) -> bool {
        self.attrs.skip.get().is_some()
    }
}

impl<'a> Container<'a> {
    /// Reads the struct; `None` after reporting an error when it is not a
    /// struct with named fields.
    pub(crate) fn from_ast(cx: &mut Ctxt, input: &'a DeriveInput, derive: &str) -> Option<Self> {
        let attrs = attr::Container::from_attrs(cx, &input.attrs);
        let fields = match &input.data {
            Data::Struct(s) => {
                match &s.fields {
                    Fields::Named(named) => named
                        .named
                        .iter()
                        .map(|f| Field {
                            ident: f.ident.as_ref().expect("named field"),
                            ty: &f.ty,
                            attrs: attr::Field::from_attrs(cx, &f.attrs),
                        })
                        .collect(),
                    Fields::Unnamed(unnamed) => {
                        cx.error_spanned_by(
                        unnamed,
                        format!(
                            "`#[derive({derive})]` needs named fields (one per column); tuple structs are not supported"
                        ),
                    );
                        return None;
                    }
                    Fields::Unit => {
                        cx.error_spanned_by(
                        &input.ident,
                        format!("`#[derive({derive})]` needs a struct with named fields, one per column"),
                    );
                        return None;
                    }
                }
            }
            Data::Enum(e) => {
                cx.error_spanned_by(
                    e.enum_token,
                    format!("`#[derive({derive})]` works on structs with named fields; enums are not supported"),
                );
                return None;
            }
            Data::Union(u) => {
                cx.error_spanned_by(
                    u.union_token,
                    format!("`#[derive({derive})]` works on structs with named fields; unions are not supported"),
                );
                return None;
            }
        };
        Some(Container {
            ident: &input.ident,
            original: input,
            attrs,
            fields,
        })
    }

    /// Stored fields (not skipped), in order.
    pub(crate) fn columns(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields.iter().filter(|f| !f.is_skipped())
    }

    pub(crate) fn version_field(&self) -> Option<&Field<'a>> {
        self.columns().find(|f| f.is_version())
    }
}
