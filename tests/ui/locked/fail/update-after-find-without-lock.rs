use safesync::prelude::*;

// No version column: a row read with `find` and written back by key would
// lose every update made in between, so a plain value has no `update`.
#[derive(Debug, Locked)]
#[safesync(table = "counters")]
struct Counter {
    #[safesync(key)]
    name: String,
    hits: i64,
}

async fn bump(tx: &mut Tx<'_>) -> Result<(), Error> {
    let mut c = Counter::find(tx, &"home".to_owned()).await?.ok_or_else(Error::not_found)?;
    c.hits += 1;
    c.update(tx).await
}

fn main() {
    let _ = bump;
}
