use safesync::prelude::*;

#[derive(Versioned)]
#[safesync(table = "memberships")]
struct Membership {
    #[safesync(key)]
    user_id: i64,
    #[safesync(key)]
    group_id: i64,
    #[safesync(version)]
    version: i64,
}

async fn use_it(mut tx: Tx<'_>) -> Result<(), Error> {
    let _ = Membership::find(&mut tx, &1).await?;
    Ok(())
}

fn main() {
    let _ = use_it;
}
