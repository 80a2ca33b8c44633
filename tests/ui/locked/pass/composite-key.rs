use safesync::prelude::*;

#[derive(Debug, Clone, Locked)]
#[safesync(table = "memberships")]
struct Membership {
    #[safesync(key)]
    user_id: i64,
    #[safesync(key)]
    group_id: i64,
    role: String,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    let _ = Membership::find(tx, &(1, 2)).await?;
    if let Some(mut m) = Membership::lock(tx, &(1, 2)).await? {
        m.role = "owner".into();
        m.update(tx).await?;
    }
    let _ = Membership::lock_nowait(tx, &(1, 2)).await?;
    let _ = Membership::lock_skip_locked(tx, &(1, 2)).await?;
    Ok(())
}

fn main() {}
