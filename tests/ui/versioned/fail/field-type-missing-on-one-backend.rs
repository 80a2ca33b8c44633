use safesync::prelude::*;

// `u32` is stored by sqlx on SQLite and MySQL, not on PostgreSQL.
#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    seats: u32,
    #[safesync(version)]
    version: i64,
}

fn main() {}
