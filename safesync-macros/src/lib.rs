//! Derive and attribute macros of [safesync](https://docs.rs/safesync). Use them through
//! the `safesync` crate, which re-exports them beside the traits they
//! implement.

mod internals;
mod locked;
mod queue_handler;
mod record;
mod transactional;
mod versioned;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Optimistic concurrency: `update`/`delete` check and advance a version
/// column. Its attributes are documented at its re-export,
/// `safesync::Versioned`.
#[proc_macro_derive(Versioned, attributes(safesync))]
pub fn derive_versioned(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    versioned::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Row locks: `lock`, `lock_nowait`, `lock_skip_locked`. Its attributes
/// are documented at its re-export, `safesync::Locked`.
#[proc_macro_derive(Locked, attributes(safesync))]
pub fn derive_locked(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    locked::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Runs an `async fn` taking `tx: &mut Tx<'_>` in a transaction, through a
/// wrapper of the same name taking `db: &Db`. Documented at its re-export,
/// `safesync::transactional`.
#[proc_macro_attribute]
pub fn transactional(args: TokenStream, input: TokenStream) -> TokenStream {
    // Not `parse_macro_input!`: on an error the fn is still emitted, so call
    // sites and IDEs keep working.
    transactional::expand(args.into(), &input.into()).into()
}

/// Turns `async fn name(tx: &mut Tx<'_>, msg: Payload) -> Result<(), Error>`
/// (a `Handler`, run in a transaction with a ledger row) or
/// `async fn name(msg: Payload) -> Result<(), Error>` (a `PlainHandler`, run
/// without a transaction: it must be idempotent itself) into a typed Redis
/// Streams handler. Documented at its re-export,
/// `safesync::queue_handler`.
#[proc_macro_attribute]
pub fn queue_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    queue_handler::expand(args.into(), input.into()).into()
}
