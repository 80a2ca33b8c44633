use safesync::prelude::*;

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

fn assert_send<T: Send>(_: T) {}

#[allow(dead_code)]
fn futures_are_send(tx: &mut Tx<'_>, account: &mut Account) {
    assert_send(Account::find(tx, &1));
    assert_send(account.insert(tx));
    assert_send(account.insert_idempotent(tx));
    assert_send(account.update(tx));
    assert_send(account.delete(tx));
}

// A whole `async fn` using them is Send too, so it can be `tokio::spawn`ed.
#[allow(dead_code)]
async fn bump(db: Db) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    if let Some(mut a) = Account::find(&mut tx, &1).await? {
        a.balance += 1;
        a.update(&mut tx).await?;
    }
    tx.commit().await
}

#[allow(dead_code)]
fn whole_task_is_send(db: Db) {
    assert_send(bump(db));
}

fn main() {}
