use safesync::prelude::*;

#[derive(Debug, Default, Clone)]
struct Cache {
    hits: u32,
}

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
    // Not stored: filled with `Default::default()` when read. Its type needs
    // no SQL encoding.
    #[safesync(skip)]
    cache: Cache,
    #[safesync(skip)]
    notes: Vec<String>,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    if let Some(mut a) = Account::find(tx, &1).await? {
        a.cache.hits += 1;
        a.notes.push("seen".into());
        a.update(tx).await?;
    }
    Ok(())
}

fn main() {}
