use safesync::prelude::*;

struct Bank;

impl Bank {
    #[safesync::transactional]
    async fn deposit(&self, tx: &mut Tx<'_>, id: i64) -> Result<(), Error> {
        let _ = (tx, id);
        Ok(())
    }
}

fn main() {}
