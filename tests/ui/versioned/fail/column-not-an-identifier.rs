use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(column = "owner name")]
    owner: String,
    #[safesync(version)]
    version: i64,
}

fn main() {}
