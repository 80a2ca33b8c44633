use safesync::{Db, Error, Tx, transactional};

#[derive(Debug, Clone)]
struct Note {
    text: String,
}

#[transactional(retry)]
async fn deposit(tx: &mut Tx<'_>, id: i64, amount: i64, note: Note) -> safesync::Result<()> {
    let _ = (id, amount, note.text);
    tx.execute("SELECT 1").await.map(drop)
}

// Patterns other than a plain name, and `mut`.
#[transactional(retry)]
async fn patterns(
    _: &mut safesync::Tx<'_>,
    (a, b): (i64, i64),
    mut total: i64,
    _: String,
) -> Result<i64, Error> {
    total += a + b;
    Ok(total)
}

#[allow(dead_code)]
async fn call(db: &Db) -> Result<(), Error> {
    deposit(db, 1, 10, Note { text: "hi".into() }).await?;
    patterns(db, (1, 2), 3, String::new()).await?;
    Ok(())
}

fn main() {}
