use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
enum Account {
    Open { id: i64, version: i64 },
    Closed,
}

fn main() {}
