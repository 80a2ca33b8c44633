use safesync::prelude::*;

struct Command {
    id: i64,
}

#[safesync::transactional(retry)]
async fn run(tx: &mut Tx<'_>, name: &str, command: Command) -> Result<u64, Error> {
    let _ = (name, command.id);
    tx.execute("SELECT 1").await
}

fn main() {}
