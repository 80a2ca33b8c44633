use safesync::prelude::*;

// `overwrite` is the blind write for records without a version column; on a
// versioned record it would bypass the version check.
#[derive(Debug, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

async fn blind(tx: &mut Tx<'_>) -> Result<(), Error> {
    let mut a = Account { id: 1, balance: 0, version: 0 };
    a.overwrite(tx).await
}

fn main() {
    let _ = blind;
}
