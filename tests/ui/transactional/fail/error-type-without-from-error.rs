use safesync::prelude::*;

#[safesync::transactional]
async fn deposit(_tx: &mut Tx<'_>) -> std::result::Result<(), String> {
    Err("no".to_owned())
}

fn main() {}
