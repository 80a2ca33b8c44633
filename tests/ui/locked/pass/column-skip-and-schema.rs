use safesync::prelude::*;

#[derive(Debug, Clone, Locked)]
#[safesync(table = "jobs", schema = "queue")]
struct Job {
    #[safesync(key, column = "job_id")]
    id: i64,
    #[safesync(column = "job_state")]
    state: String,
    #[safesync(skip)]
    attempts_seen: u32,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    if let Some(mut job) = Job::lock(tx, &1).await? {
        job.attempts_seen += 1;
        job.state = "running".into();
        job.update(tx).await?;
    }
    Ok(())
}

fn main() {}
