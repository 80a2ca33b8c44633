use safesync::prelude::*;

#[safesync::transactional]
async fn deposit() -> Result<(), Error> {
    Ok(())
}

fn main() {}
