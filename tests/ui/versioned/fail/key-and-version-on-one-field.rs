use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key, version)]
    id: i64,
    balance: i64,
}

fn main() {}
