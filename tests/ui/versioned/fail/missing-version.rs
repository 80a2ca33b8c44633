use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    version: i64,
}

fn main() {}
