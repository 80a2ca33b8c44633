use safesync::prelude::*;

#[derive(Debug, Clone, Locked)]
#[safesync(table = "jobs")]
struct Job {
    #[safesync(key)]
    id: i64,
    state: String,
}

#[derive(Debug, Clone, Versioned, Locked)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    #[safesync(version)]
    version: i64,
}

fn assert_send<T: Send>(_: T) {}

#[allow(dead_code)]
fn futures_are_send(tx: &mut Tx<'_>, job: &mut Job, held: &mut Held<Job>, gone: Held<Job>) {
    assert_send(Job::lock(tx, &1));
    assert_send(Job::lock_nowait(tx, &1));
    assert_send(Job::lock_skip_locked(tx, &1));
    assert_send(Job::find(tx, &1));
    assert_send(job.insert(tx));
    assert_send(job.insert_idempotent(tx));
    assert_send(job.overwrite(tx));
    assert_send(held.update(tx));
    assert_send(gone.delete(tx));
    assert_send(Account::lock(tx, &1));
    assert_send(Account::lock_nowait(tx, &1));
    assert_send(Account::lock_skip_locked(tx, &1));
}

#[allow(dead_code)]
async fn claim(db: Db) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    if let Some(mut job) = Job::lock_skip_locked(&mut tx, &1).await? {
        job.state = "running".into();
        job.update(&mut tx).await?;
    }
    tx.commit().await
}

#[allow(dead_code)]
fn whole_task_is_send(db: Db) {
    assert_send(claim(db));
}

fn main() {}
