use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account(#[safesync(key)] i64, #[safesync(version)] i64);

fn main() {}
