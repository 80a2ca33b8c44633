use safesync::prelude::*;

#[derive(Locked)]
#[safesync(table = "jobs")]
struct Job {
    id: i64,
    state: String,
}

fn main() {}
