use safesync::prelude::*;

// Every mistake is reported in one build, and a key after a mistake in the
// same attribute is still read (`version` below is not reported missing).
#[derive(Versioned)]
#[safesync(table = "my-table", tabel = "x")]
struct Account {
    #[safesync(kye)]
    id: i64,
    #[safesync(column = "bad name")]
    balance: i64,
    #[safesync(verison = 1, version)]
    version: i64,
}

fn main() {}
