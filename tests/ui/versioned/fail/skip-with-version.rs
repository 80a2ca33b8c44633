use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(skip, version)]
    version: i64,
}

fn main() {}
