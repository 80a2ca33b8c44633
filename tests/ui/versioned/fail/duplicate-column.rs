use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(column = "balance")]
    pending: i64,
    #[safesync(version)]
    version: i64,
}

fn main() {}
