use safesync::prelude::*;

struct Money(i64);

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: Money,
    #[safesync(version)]
    version: i64,
}

fn main() {}
