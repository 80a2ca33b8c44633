use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(column = "amount")]
    balance: i64,
    #[safesync(column = "amount")]
    pending: i64,
    #[safesync(version)]
    version: i64,
}

fn main() {}
