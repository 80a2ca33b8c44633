use safesync::prelude::*;

#[derive(Debug, Clone, Versioned)]
#[safesync(table = "counters")]
struct Counter {
    #[safesync(key)]
    name: String,
    hits: i64,
    #[safesync(version)]
    version: i32,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    let key = String::from("home");
    if let Some(mut counter) = Counter::find(tx, &key).await? {
        counter.hits += 1;
        counter.update(tx).await?;
        let _: i32 = counter.version;
    }
    Ok(())
}

fn main() {}
