use safesync::prelude::*;

// Like `lock`, the non-waiting row locks take the transaction: calling them
// on the pool does not compile.
#[derive(Debug, Locked)]
#[safesync(table = "jobs")]
struct Job {
    #[safesync(key)]
    id: i64,
    state: String,
}

async fn claim(db: &Db) -> Result<(), Error> {
    let _ = Job::lock_nowait(db, &1).await?;
    let _ = Job::lock_skip_locked(db, &2).await?;
    Ok(())
}

fn main() {
    let _ = claim;
}
