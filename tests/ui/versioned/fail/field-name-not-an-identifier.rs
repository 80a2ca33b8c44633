use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "items")]
struct Item {
    #[safesync(key)]
    id: i64,
    größe: i64,
    #[safesync(version)]
    version: i64,
}

fn main() {}
