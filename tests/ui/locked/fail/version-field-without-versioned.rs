use safesync::prelude::*;

#[derive(Locked)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(version)]
    version: i64,
}

fn main() {}
