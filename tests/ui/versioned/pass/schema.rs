use safesync::prelude::*;

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "accounts", schema = "billing")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

// Container attributes may also be split, and `crate` names the facade when
// it is re-exported under another path.
#[derive(Debug, Clone, Versioned)]
#[safesync(table = "invoices")]
#[safesync(schema = "billing", crate = "::safesync")]
struct Invoice {
    #[safesync(key)]
    id: i64,
    total: i64,
    #[safesync(version)]
    version: i64,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    let _ = Account::find(tx, &1).await?;
    let _ = Invoice::find(tx, &1).await?;
    Ok(())
}

fn main() {}
