use safesync::prelude::*;

struct NotAHandler;

fn worker(db: Db, redis: safesync::redis::Client) -> safesync::Worker {
    safesync::Worker::new(db, redis).handle(NotAHandler)
}

fn main() {
    let _ = worker;
}
