use safesync::prelude::*;

async fn tags(tx: &mut Tx<'_>) -> Result<Vec<String>, Error> {
    tx.fetch_one::<Vec<String>>("SELECT tags FROM posts WHERE id = ?", (1_i64,)).await
}

fn main() {}
