use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts", tabel = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(version)]
    version: i64,
}

fn main() {}
