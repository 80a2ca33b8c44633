use safesync::prelude::*;

#[derive(Locked)]
#[safesync(table = "jobs")]
struct Job {
    #[safesync(primary_key)]
    id: i64,
    state: String,
}

fn main() {}
