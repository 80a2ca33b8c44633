use safesync::prelude::*;

#[derive(Debug, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    owner: String,
    balance: i64,
    #[safesync(version)]
    version: i64,
}

// Borrowed and owned values, `Option` for NULL, several at once; a
// transaction's calls stay `Send` for `tokio::spawn`.
async fn calls(tx: &mut Tx<'_>, name: &str, note: Option<String>) -> Result<(), Error> {
    let owned = String::from("x");
    tx.execute_with("UPDATE accounts SET owner = ? WHERE owner = ?", (name, &owned)).await?;
    tx.execute_with("UPDATE accounts SET note = ?", (note,)).await?;
    let _: i64 = tx.fetch_one("SELECT COUNT(*) FROM accounts", ()).await?;
    let _: Option<String> = tx.fetch_optional("SELECT owner FROM accounts WHERE id = ?", (1_i64,)).await?;
    let _: Vec<f64> = tx.fetch_all("SELECT 1.5 WHERE ? AND ?", (true, 2_i32)).await?;
    let _: Vec<Account> = Account::select_all(tx, "WHERE owner = ? ORDER BY id", (name,)).await?;
    let _: Account = Account::select_one(tx, "WHERE id = ?", (1_i64,)).await?;
    let _: Vec<Account> = Account::find_many(tx, &[1, 2]).await?;
    Ok(())
}

fn assert_send<T: Send>(_: T) {}

#[allow(dead_code)]
async fn on_db(db: &Db) -> Result<(), Error> {
    db.execute_with("DELETE FROM accounts WHERE balance = ?", (0_i64,)).await?;
    let _: i64 = db.fetch_one("SELECT COUNT(*) FROM accounts", ()).await?;
    Ok(())
}

fn main() {
    let db: Option<Db> = None;
    if let Some(db) = db {
        assert_send(async move {
            let mut tx = db.begin().await?;
            calls(&mut tx, "ada", None).await?;
            on_db(&db).await?;
            tx.commit().await
        });
    }
}
