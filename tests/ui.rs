//! Compile-time tests of `#[derive(Versioned)]`, `#[derive(Locked)]`,
//! `#[transactional]`, `#[queue_handler]` and the values bound to queries:
//! every accepted form builds, and every mistake is a clear error on the span
//! that caused it.
//!
//! Compiler messages list candidate types from every crate in the build, so
//! the expected `.stderr` files are made with every feature on, as the test
//! command (`bash scripts/test`) runs: regenerate them with
//! `TRYBUILD=overwrite cargo test --all-features --test ui`, then read them.

#[cfg(all(feature = "sqlite", feature = "mysql", feature = "postgres"))]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    let mut dirs = vec!["versioned", "locked", "transactional", "query"];
    if cfg!(feature = "queue") {
        dirs.push("queue_handler");
    }
    for dir in dirs {
        t.pass(format!("tests/ui/{dir}/pass/*.rs"));
        t.compile_fail(format!("tests/ui/{dir}/fail/*.rs"));
    }
}
