use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key, column = account_id)]
    id: i64,
    #[safesync(version)]
    version: i64,
}

fn main() {}
