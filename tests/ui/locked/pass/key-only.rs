use safesync::prelude::*;

// Every column is a key: `update` has nothing to set but still type-checks.
#[derive(Debug, Clone, Locked)]
#[safesync(table = "tags")]
struct Tag {
    #[safesync(key)]
    name: String,
}

#[allow(dead_code)]
async fn use_it(tx: &mut Tx<'_>) -> Result<(), Error> {
    let key = String::from("rust");
    if let Some(mut tag) = Tag::lock(tx, &key).await? {
        tag.update(tx).await?;
        tag.delete(tx).await?;
    }
    Ok(())
}

fn main() {}
