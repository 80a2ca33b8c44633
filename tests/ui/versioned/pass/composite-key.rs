use safesync::prelude::*;

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "memberships")]
struct Membership {
    #[safesync(key)]
    user_id: i64,
    #[safesync(key)]
    group_id: i32,
    role: String,
    #[safesync(version)]
    version: i64,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    // The key is a tuple of the key fields' types, in field order.
    let key: (i64, i32) = (1, 2);
    let mut m = Membership::find(tx, &key)
        .await?
        .ok_or_else(Error::not_found)?;
    m.role = "admin".into();
    m.update(tx).await?;
    m.delete(tx).await?;
    let _ = Membership::find(tx, &(1, 2)).await?;
    Ok(())
}

fn main() {}
