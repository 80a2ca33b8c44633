use safesync::prelude::*;

// No version field: `Locked` alone owns the record's operations.
#[derive(Debug, Clone, Locked)]
#[safesync(table = "jobs")]
struct Job {
    #[safesync(key)]
    id: i64,
    state: String,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    let job = Job {
        id: 1,
        state: "new".into(),
    };
    job.insert(tx).await?;
    let _: Inserted = job.insert_idempotent(tx).await?;
    let _: Option<Job> = Job::find(tx, &1).await?;
    let _: Option<Held<Job>> = Job::lock_nowait(tx, &1).await?;
    let _: Option<Held<Job>> = Job::lock_skip_locked(tx, &1).await?;
    let mut held: Held<Job> = Job::lock(tx, &1).await?.ok_or_else(Error::not_found)?;
    held.state = "done".into();
    held.update(tx).await?;
    held.delete(tx).await?;
    // The deliberate blind write by key.
    let mut blind = Job { id: 2, state: "x".into() };
    blind.overwrite(tx).await?;
    let _: Job = Job::lock(tx, &2).await?.ok_or_else(Error::not_found)?.into_inner();
    Ok(())
}

fn main() {}
