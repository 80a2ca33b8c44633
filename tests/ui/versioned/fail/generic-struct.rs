use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account<T> {
    #[safesync(key)]
    id: i64,
    balance: T,
    #[safesync(version)]
    version: i64,
}

fn main() {}
