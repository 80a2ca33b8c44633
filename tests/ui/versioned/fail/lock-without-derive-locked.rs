use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(version)]
    version: i64,
}

async fn use_it(mut tx: Tx<'_>) -> Result<(), Error> {
    let _ = Account::lock(&mut tx, &1).await?;
    Ok(())
}

fn main() {
    let _ = use_it;
}
