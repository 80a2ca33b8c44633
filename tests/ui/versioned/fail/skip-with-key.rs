use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key, skip)]
    id: i64,
    #[safesync(key)]
    number: i64,
    #[safesync(version)]
    version: i64,
}

fn main() {}
