use safesync::prelude::*;

#[derive(Locked)]
#[safesync(table = "jobs")]
enum Job {
    Queued { id: i64 },
    Done { id: i64 },
}

fn main() {}
