use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account;

fn main() {}
