use safesync::prelude::*;

// sqlx stores `i8` on every backend (PostgreSQL as its internal "char"), so
// the record works, but `create_table`/`check_table` know no column for it.
#[derive(Debug, Clone, Versioned)]
#[safesync(table = "accounts")]
struct Account {
    #[safesync(key)]
    id: i64,
    level: i8,
    #[safesync(version)]
    version: i64,
}

async fn setup(db: &Db) -> Result<(), Error> {
    db.create_table::<Account>().await
}

fn main() {
    let _ = setup;
}
