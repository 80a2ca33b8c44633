use safesync::prelude::*;

#[derive(Debug, Locked)]
#[safesync(table = "counters")]
struct Counter {
    #[safesync(key)]
    name: String,
    hits: i64,
}

async fn remove(tx: &mut Tx<'_>) -> Result<(), Error> {
    let c = Counter::find(tx, &"home".to_owned()).await?.ok_or_else(Error::not_found)?;
    c.delete(tx).await
}

fn main() {
    let _ = remove;
}
