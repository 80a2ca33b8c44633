use safesync::prelude::*;

#[derive(Debug, Clone, Versioned, Locked)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

// The derive order does not matter.
#[derive(Debug, Clone, Locked, Versioned)]
#[safesync(table = "wallets")]
struct Wallet {
    #[safesync(key)]
    id: i64,
    #[safesync(version)]
    version: i32,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    let mut a = Account::lock(tx, &1).await?.ok_or_else(Error::not_found)?;
    a.balance -= 5;
    a.update(tx).await?;
    let _ = Account::lock_nowait(tx, &1).await?;
    let _ = Account::lock_skip_locked(tx, &1).await?;
    let _ = Account::find(tx, &1).await?;
    a.insert(tx).await?;
    let _ = a.insert_idempotent(tx).await?;
    a.delete(tx).await?;
    if let Some(mut w) = Wallet::lock(tx, &2).await? {
        w.update(tx).await?;
    }
    Ok(())
}

fn main() {}
