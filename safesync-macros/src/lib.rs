//! Derive macros of [safesync](https://docs.rs/safesync). Use them through
//! the `safesync` crate, which re-exports them beside the traits they
//! implement.

mod internals;
mod locked;
mod record;
mod versioned;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Optimistic concurrency: `update`/`delete` check and advance a version
/// column. See `safesync::Versioned`.
#[proc_macro_derive(Versioned, attributes(safesync))]
pub fn derive_versioned(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    versioned::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Row locks: `lock`, `lock_nowait`, `lock_skip_locked`. See
/// `safesync::Locked`.
#[proc_macro_derive(Locked, attributes(safesync))]
pub fn derive_locked(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    locked::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
