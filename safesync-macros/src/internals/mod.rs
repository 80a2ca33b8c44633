//! The front end shared by every derive: parse, collect errors, validate.

pub(crate) mod ast;
pub(crate) mod attr;
pub(crate) mod check;
pub(crate) mod ctxt;
pub(crate) mod symbol;
