use safesync::prelude::*;

struct Connection;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(version)]
    version: i64,
    #[safesync(skip)]
    conn: Connection,
}

fn main() {}
