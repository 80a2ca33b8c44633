use safesync::prelude::*;

// A row lock lives as long as its transaction: every lock call takes the
// transaction, so locking on the pool does not compile.
#[derive(Debug, Locked)]
#[safesync(table = "jobs")]
struct Job {
    #[safesync(key)]
    id: i64,
    state: String,
}

async fn claim(db: &Db) -> Result<(), Error> {
    let _ = Job::lock(db, &1).await?;
    Ok(())
}

fn main() {
    let _ = claim;
}
