use safesync::prelude::*;

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key, column = "account_id")]
    id: i64,
    #[safesync(column = "owner_name")]
    owner: String,
    // Attributes may also be split over several `#[safesync(...)]`.
    #[safesync(version)]
    #[safesync(column = "row_version")]
    version: i64,
    // A raw identifier maps to the column without `r#`.
    r#type: String,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    if let Some(mut a) = Account::find(tx, &7).await? {
        a.owner = "grace".into();
        a.r#type = "savings".into();
        a.update(tx).await?;
    }
    Ok(())
}

fn main() {}
