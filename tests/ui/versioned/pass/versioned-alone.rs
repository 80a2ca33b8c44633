use safesync::prelude::*;

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    owner: String,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    let account = Account {
        id: 1,
        owner: "ada".into(),
        balance: 0,
        version: 0,
    };
    account.insert(tx).await?;
    let _: Inserted = account.insert_idempotent(tx).await?;
    let mut found: Account = Account::find(tx, &1).await?.ok_or_else(Error::not_found)?;
    found.balance += 10;
    found.update(tx).await?;
    found.delete(tx).await?;
    Ok(())
}

fn main() {}
