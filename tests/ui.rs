//! Compile-time tests of `#[derive(Versioned)]` and `#[derive(Locked)]`:
//! every accepted form builds, and every mistake is a clear error on the
//! span that caused it. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test --test ui`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/*/pass/*.rs");
    t.compile_fail("tests/ui/*/fail/*.rs");
}
